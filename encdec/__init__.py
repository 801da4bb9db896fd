"""encdec: encoder-decoder transformers in plain PyTorch, Hugging Face compatible."""

from encdec.config import BackboneConfig, BertConfig, EncoderDecoderConfig, GPT2Config, RobertaConfig
from encdec.model import EncoderDecoderModel, Seq2SeqLMOutput, shift_right

__all__ = [
    "BackboneConfig", "BertConfig", "EncoderDecoderConfig", "EncoderDecoderModel", "GPT2Config",
    "RobertaConfig", "Seq2SeqLMOutput", "shift_right",
]
