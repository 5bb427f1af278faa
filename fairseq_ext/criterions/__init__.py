"""fairseq criterions of the plugin (registered by importing them: fairseq_ext.plugin does)."""
