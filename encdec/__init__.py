"""encdec: encoder-decoder transformers in plain PyTorch, Hugging Face compatible."""

from encdec.config import BackboneConfig, BertConfig, EncoderDecoderConfig, GPT2Config, RobertaConfig
from encdec.generation import GenerationConfig
from encdec.hub import register_mirror, resolve_model_dir
from encdec.model import EncoderDecoderModel, Seq2SeqLMOutput, shift_right
from encdec.summarize import Summarizer, summarize
from encdec.tokenizer import Tokenizer, load_tokenizer

# transformers' tokenizer class names, so code from its documentation ports by changing the import.
AutoTokenizer = BertTokenizer = RobertaTokenizer = GPT2Tokenizer = Tokenizer

__all__ = [
    "AutoTokenizer", "BackboneConfig", "BertConfig", "BertTokenizer", "EncoderDecoderConfig",
    "EncoderDecoderModel", "GenerationConfig", "GPT2Config", "GPT2Tokenizer", "RobertaConfig", "RobertaTokenizer",
    "Seq2SeqLMOutput", "Summarizer", "Tokenizer", "load_tokenizer", "register_mirror", "resolve_model_dir", "shift_right", "summarize",
]
