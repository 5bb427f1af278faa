"""``--criterion masked_lm_accuracy``: fairseq's masked-LM loss, and the share of masked tokens predicted right.

The loss (bits per masked token) tells how far a model is from the unigram distribution only against that
distribution's entropy; the accuracy says directly whether it reads context. Logged as ``accuracy`` (%), so
fairseq-train's validation logs ``valid_accuracy`` beside ``valid_loss``; the loss and its gradient are the stock
criterion's.

fairseq masks the sentence's ``<s>`` and ``</s>`` like any token, and with one sentence per sample (``--sample-break-mode
eos``) they are an eighth of the masked tokens, each given away by its position. So the criterion also logs
``text_loss`` (bits) and ``text_accuracy`` over the masked tokens that are text: the numbers to set against the
text's unigram entropy.
"""
import math

import torch
from fairseq import modules
from fairseq.criterions import register_criterion
from fairseq.criterions.masked_lm import MaskedLmConfig, MaskedLmLoss
from fairseq.logging import metrics


@register_criterion("masked_lm_accuracy", dataclass=MaskedLmConfig)
class MaskedLmAccuracyLoss(MaskedLmLoss):
    def forward(self, model, sample, reduce=True):
        masked_tokens = sample["target"].ne(self.padding_idx)
        sample_size = masked_tokens.int().sum()
        # As fairseq's: a batch with no masked token projects every token (on a GPU without a host sync).
        if masked_tokens.device.type == "cpu":
            if not masked_tokens.any():
                masked_tokens = None
        else:
            masked_tokens = torch.where(masked_tokens.any(), masked_tokens, masked_tokens.new([True]))
        logits = model(**sample["net_input"], masked_tokens=masked_tokens)[0]
        targets = model.get_targets(sample, [logits])
        if masked_tokens is not None:
            targets = targets[masked_tokens]
        logits, targets = logits.view(-1, logits.size(-1)), targets.view(-1)
        loss = modules.cross_entropy(logits, targets, reduction="sum", ignore_index=self.padding_idx)
        real = targets.ne(self.padding_idx)
        right = logits.argmax(-1).eq(targets)
        dictionary = self.task.source_dictionary
        text = real & targets.ne(dictionary.bos()) & targets.ne(dictionary.eos())
        with torch.no_grad():
            text_loss = modules.cross_entropy(logits[text], targets[text], reduction="sum")
        logging_output = {"loss": loss.data, "ntokens": sample["ntokens"], "nsentences": sample["nsentences"],
                          "sample_size": sample_size, "n_correct": (right & real).sum().data,
                          "n_scored": real.sum().data, "text_loss": text_loss.data,
                          "n_text_correct": (right & text).sum().data, "n_text": text.sum().data}
        return loss, sample_size, logging_output

    @staticmethod
    def reduce_metrics(logging_outputs):
        MaskedLmLoss.reduce_metrics(logging_outputs)
        scored = sum(log.get("n_scored", 0) for log in logging_outputs)
        if scored > 0:
            correct = sum(log.get("n_correct", 0) for log in logging_outputs)
            metrics.log_scalar("accuracy", 100.0 * correct / scored, scored, round=2)
        text = sum(log.get("n_text", 0) for log in logging_outputs)
        if text > 0:
            text_loss = sum(log.get("text_loss", 0) for log in logging_outputs)
            metrics.log_scalar("text_loss", text_loss / text / math.log(2), text, round=3)
            correct = sum(log.get("n_text_correct", 0) for log in logging_outputs)
            metrics.log_scalar("text_accuracy", 100.0 * correct / text, text, round=2)
