from fairseq_ext import plugin  # noqa: F401  (the fairseq glue registers, and patches, through the plugin)
