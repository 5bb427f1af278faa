"""One incremental step of fairseq's TransformerDecoder, computed with less traffic than fairseq's own.

It reads the decoder's own modules (embeddings, LayerNorms, projections, FFN: whatever the compression flags made
of them, int8 kernels and pruned heads included) and runs the same arithmetic in the same order as
``TransformerDecoderBase.extract_features_scriptable`` with an incremental state, except for four things that
cost time and change nothing:

- Cross-attention is beam-aware. The encoder keys and values are projected once per sentence, not once per beam,
  and the beams of a sentence attend to them together; they are never reordered, except when sentences leave
  the batch. (fairseq's ``MultiheadAttention`` has this path, but only BART switches it on.)
- The self-attention keys and values live in preallocated buffers that grow by doubling: no ``torch.cat`` per
  step. A reorder copies only the rows of beams that did not continue themselves, in place, or, when those are
  more than half, gathers the filled part into a second buffer (one pass instead of fairseq's cat + gather).
- The first step runs once per sentence: all beams of a sentence start from the same token, so the beams' rows
  are copies of the sentence's row.
- The log-probabilities skip fairseq's in-place division by a temperature of 1.

:func:`unsupported` names what this step does not implement (a decoder subclass, adaptive softmax, attention
with extra bias keys, ...); the generator then falls back to fairseq's own decoding.
"""
import torch
from fairseq import utils
from fairseq.models.transformer import TransformerDecoderBase
from fairseq.modules.transformer_layer import TransformerDecoderLayerBase


def unsupported(decoder):
    """Why this step cannot stand in for ``decoder``'s own incremental forward, or None when it can."""
    if not isinstance(decoder, TransformerDecoderBase):
        return f"decoder is {type(decoder).__name__}, not fairseq's TransformerDecoder"
    for method in ("forward", "extract_features", "extract_features_scriptable", "output_layer"):
        if getattr(type(decoder), method) is not getattr(TransformerDecoderBase, method):
            return f"{type(decoder).__name__} overrides {method}"
    if decoder.adaptive_softmax is not None:
        return "adaptive softmax"
    if decoder.cross_self_attention:
        return "cross self-attention"
    for module in decoder.modules():
        if getattr(module, "apply_during_inference", False):
            return "dropout at inference (--retain-dropout)"
    for index, layer in enumerate(decoder.layers):
        if type(layer).forward is not TransformerDecoderLayerBase.forward:
            return f"decoder layer {index} is {type(layer).__name__} with its own forward"
        if layer.encoder_attn is None:
            return f"decoder layer {index} has no encoder attention"
        extras = [name for name in ("c_attn", "attn_ln", "ffn_layernorm", "w_resid")
                  if getattr(layer, name) is not None]
        if extras:
            return f"decoder layer {index} uses {', '.join(extras)}"
        for attention in (layer.self_attn, layer.encoder_attn):
            if attention.bias_k is not None or attention.add_zero_attn:
                return f"decoder layer {index}: attention with bias_k/bias_v or add_zero_attn"
    return None


def _residual(layer, norm, x, sublayer):
    """``(x + out, extra)`` for ``out, extra = sublayer(...)``, with the layer's LayerNorm before the sublayer
    (pre-norm) or after the sum (post-norm), as in fairseq's decoder layer."""
    if layer.normalize_before:
        out, extra = sublayer(norm(x))
        return x + out, extra
    out, extra = sublayer(x)
    return norm(x + out), extra


def _heads(x, attention, rows):
    """(rows, embed) -> (rows, heads, 1, head_dim)."""
    return x.view(rows, attention.num_heads, 1, attention.head_dim)


class LayerCache:
    """The keys and values one decoder layer keeps between steps.

    Self-attention: ``keys``/``values`` of shape (rows, heads, capacity, head_dim), the first ``length`` positions
    filled, rows = sentences x beams. Cross-attention: ``cross_keys``/``cross_values`` of shape (sentences, heads,
    source length, head_dim), computed at the first step.
    """

    def __init__(self, keys, values, cross_keys, cross_values):
        self.keys, self.values = keys, values
        self.spare_keys, self.spare_values = torch.empty_like(keys), torch.empty_like(values)
        self.cross_keys, self.cross_values = cross_keys, cross_values

    def append(self, position, key, value):
        capacity = self.keys.size(2)
        if position == capacity:
            self.keys = torch.cat([self.keys, torch.empty_like(self.keys)], dim=2)
            self.values = torch.cat([self.values, torch.empty_like(self.values)], dim=2)
            self.spare_keys, self.spare_values = torch.empty_like(self.keys), torch.empty_like(self.values)
        self.keys[:, :, position] = key
        self.values[:, :, position] = value

    def reorder(self, length, rows, moved, sentences):
        """Keep the self-attention rows ``rows`` (their first ``length`` positions; ``moved`` lists the indices i
        where rows[i] != i, or is None when sentences left the batch) and, when given, the cross-attention's
        ``sentences``."""
        if moved is not None and 2 * moved.numel() <= rows.numel():
            # Most beams continue themselves: copy the others' rows in place (gathered first, then written).
            if moved.numel() > 0:
                sources = rows[moved]
                self.keys[moved, :, :length] = self.keys[sources, :, :length]
                self.values[moved, :, :length] = self.values[sources, :, :length]
        else:
            if rows.numel() != self.spare_keys.size(0):  # sentences left the batch: smaller buffers
                self.spare_keys = self.keys.new_empty((rows.numel(),) + self.keys.shape[1:])
                self.spare_values = self.values.new_empty((rows.numel(),) + self.values.shape[1:])
            torch.index_select(self.keys[:, :, :length], 0, rows, out=self.spare_keys[:, :, :length])
            torch.index_select(self.values[:, :, :length], 0, rows, out=self.spare_values[:, :, :length])
            self.keys, self.spare_keys = self.spare_keys, self.keys
            self.values, self.spare_values = self.spare_values, self.values
        if sentences is not None:
            self.cross_keys = self.cross_keys.index_select(0, sentences)
            self.cross_values = self.cross_values.index_select(0, sentences)


class DecoderCache:
    """Everything the lean decoder keeps for one batch: the layers' keys and values, how many target positions
    they hold, and the source padding mask per sentence."""

    def __init__(self, beam_size):
        self.beam_size = beam_size
        self.layers = []
        self.length = 0
        self.padding_mask = None  # (sentences, source length), True at padding; None when there is none

    def reorder(self, new_order):
        """fairseq's reorder: ``new_order[i]`` is the row (sentence x beam + beam) that row ``i`` continues."""
        sentences = new_order.view(-1, self.beam_size)[:, 0].div(self.beam_size, rounding_mode="floor")
        previous_sentences = self.layers[0].cross_keys.size(0)
        if sentences.numel() == previous_sentences and torch.equal(
                sentences, torch.arange(previous_sentences, device=sentences.device)):
            sentences = None
        elif self.padding_mask is not None:
            self.padding_mask = self.padding_mask.index_select(0, sentences)
        moved = None
        if new_order.numel() == self.layers[0].keys.size(0):
            moved = (new_order != torch.arange(new_order.numel(), device=new_order.device)).nonzero().squeeze(1)
        for layer in self.layers:
            layer.reorder(self.length, new_order, moved, sentences)


class LeanDecoder:
    """The incremental step of one fairseq ``TransformerDecoder`` (see the module's docstring)."""

    def __init__(self, decoder):
        self.decoder = decoder

    def step(self, tokens, encoder_out, cache, incremental_state, temperature=1.0):
        """Log-probabilities (rows, vocabulary) of the next token after ``tokens`` (rows, step + 1), and the last
        layer's cross-attention averaged over heads (rows, source length), as fairseq's ensemble returns them."""
        first = cache.length == 0
        beam = cache.beam_size
        # The first step's rows are sentences x identical beams: compute one row per sentence.
        step_tokens = tokens[::beam] if first else tokens
        x = self._embed(step_tokens, incremental_state)
        if first:
            self._start(cache, encoder_out)
        attention = None
        last = len(self.decoder.layers) - 1
        for index, (layer, layer_cache) in enumerate(zip(self.decoder.layers, cache.layers)):
            x, layer_attention = self._layer(layer, layer_cache, x, cache, first, index == last)
            if layer_attention is not None:
                attention = layer_attention
        cache.length += 1
        decoder = self.decoder
        if decoder.layer_norm is not None:
            x = decoder.layer_norm(x)
        if decoder.project_out_dim is not None:
            x = decoder.project_out_dim(x)
        logits = decoder.output_layer(x)
        if temperature != 1.0:
            logits.div_(temperature)
        log_probs = decoder.get_normalized_probs((logits, None), log_probs=True, sample=None)
        attention = attention.float().to(x)
        if first:
            log_probs = log_probs.repeat_interleave(beam, dim=0)
            attention = attention.repeat_interleave(beam, dim=0)
        return log_probs, attention

    def _embed(self, tokens, incremental_state):
        decoder = self.decoder
        positions = None
        if decoder.embed_positions is not None:
            positions = decoder.embed_positions(tokens, incremental_state=incremental_state)[:, -1:]
        x = decoder.embed_scale * decoder.embed_tokens(tokens[:, -1:].contiguous())
        if decoder.quant_noise is not None:
            x = decoder.quant_noise(x)
        if decoder.project_in_dim is not None:
            x = decoder.project_in_dim(x)
        if positions is not None:
            x += positions
        if decoder.layernorm_embedding is not None:
            x = decoder.layernorm_embedding(x)
        return x.squeeze(1)  # (rows, embed)

    def _start(self, cache, encoder_out):
        """The first step: project the encoder output to each layer's cross-attention keys and values, once per
        sentence, and allocate the self-attention buffers."""
        source = encoder_out["encoder_out"][0]  # (source length, sentences, embed)
        masks = encoder_out["encoder_padding_mask"]
        cache.padding_mask = masks[0] if len(masks) > 0 and masks[0].any() else None
        sentences, length = source.size(1), source.size(0)
        rows = sentences * cache.beam_size
        for layer in self.decoder.layers:
            cross, own = layer.encoder_attn, layer.self_attn
            keys = cross.k_proj(source).view(length, sentences, cross.num_heads, cross.head_dim).permute(1, 2, 0, 3)
            values = cross.v_proj(source).view(length, sentences, cross.num_heads, cross.head_dim).permute(1, 2, 0, 3)
            capacity = 16
            buffer_shape = (rows, own.num_heads, capacity, own.head_dim)
            cache.layers.append(LayerCache(source.new_empty(buffer_shape), source.new_empty(buffer_shape),
                                           keys.contiguous(), values.contiguous()))

    def _layer(self, layer, layer_cache, x, cache, first, need_attention):
        """fairseq's TransformerDecoderLayerBase.forward for one incremental step (rows, embed)."""
        x, _ = _residual(layer, layer.self_attn_layer_norm, x, lambda y: (self._self_attention(
            layer.self_attn, layer_cache, y, cache.length, first, cache.beam_size), None))
        x, attention = _residual(layer, layer.encoder_attn_layer_norm, x, lambda y: self._cross_attention(
            layer.encoder_attn, layer_cache, y, cache.padding_mask, need_attention))
        x, _ = _residual(layer, layer.final_layer_norm, x,
                         lambda y: (layer.fc2(layer.activation_fn(layer.fc1(y))), None))
        return x, attention

    @staticmethod
    def _self_attention(attention, layer_cache, x, position, first, beam):
        rows = x.size(0)
        q = attention.q_proj(x)
        q *= attention.scaling
        k, v = attention.k_proj(x), attention.v_proj(x)
        k, v = _heads(k, attention, rows)[:, :, 0], _heads(v, attention, rows)[:, :, 0]
        if first:  # one row per sentence: the buffers hold every beam's copy
            layer_cache.append(position, k.repeat_interleave(beam, dim=0), v.repeat_interleave(beam, dim=0))
        else:
            layer_cache.append(position, k, v)
        keys = layer_cache.keys[:, :, :position + 1]
        values = layer_cache.values[:, :, :position + 1]
        if first:
            keys, values = keys[::beam], values[::beam]
        scores = torch.matmul(_heads(q, attention, rows), keys.transpose(2, 3))  # (rows, heads, 1, positions)
        out = torch.matmul(utils.softmax(scores, dim=-1).type_as(scores), values)  # (rows, heads, 1, head_dim)
        return attention.out_proj(out.reshape(rows, attention.num_heads * attention.head_dim))

    @staticmethod
    def _cross_attention(attention, layer_cache, x, padding_mask, need_attention):
        """The beams of each sentence query its keys and values together: (sentences, heads, beams, head_dim)."""
        rows = x.size(0)
        sentences = layer_cache.cross_keys.size(0)
        q = attention.q_proj(x)
        q *= attention.scaling
        q = q.view(sentences, rows // sentences, attention.num_heads, attention.head_dim).transpose(1, 2)
        scores = torch.matmul(q, layer_cache.cross_keys.transpose(2, 3))  # (sentences, heads, beams, source)
        if padding_mask is not None:
            scores = scores.masked_fill(padding_mask[:, None, None, :], float("-inf"))
        probabilities = utils.softmax(scores, dim=-1)
        # (sentences, heads, beams, head_dim) -> (sentences, beams, heads, head_dim)
        out = torch.matmul(probabilities.type_as(scores), layer_cache.cross_values).transpose(1, 2)
        out = attention.out_proj(out.reshape(rows, attention.num_heads * attention.head_dim))
        if not need_attention:
            return out, None
        return out, probabilities.mean(dim=1).reshape(rows, -1)  # averaged over heads, as fairseq's alignment
