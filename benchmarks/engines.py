"""CTranslate2, the engine to beat, beside encdec and transformers on the same shapes and lengths.

    python benchmarks/engines.py [--model DIR] [--batch 16] [--source 256] [--new-tokens 64] [--threads 2]
    python benchmarks/engines.py --tiny     # a seconds-long run of the same code (tests/test_benchmarks.py)

Shapes come from an encdec model folder (default: the MiniLM bert2bert of `generate.py --synthetic`,
the quickstart's shapes): layers, width, heads, FFN width, vocabulary. encdec and transformers run
that bert2bert. CTranslate2 runs a BART with the same shapes and random weights (speed does not
depend on the values), written by transformers and converted with CTranslate2's Transformers
converter; transformers also runs that BART, which measures what the bert2bert/BART difference
alone costs (BART has no LM-head transform and no token-type embeddings).

Every engine gets the same source ids (batch x source tokens) and generates exactly `--new-tokens`
tokens (min = max), greedy and beam 4 (no other rule, so every engine does the same search), in
fp32 and int8 (encdec's `dtype=int8`, CTranslate2's `compute_type="int8"`), and bf16 where the
library has it on the CPU (encdec, transformers). Each (engine, dtype, mode) runs in a fresh
process after a small warm-up call: CTranslate2's OpenMP threads keep spinning after a call, and
whatever ran next in the same process ran 25-40% slower. The table gives tokens/s (batch x new
tokens over the whole call, encoder included), the ratio to transformers' fp32 bert2bert and to
CTranslate2 in the same dtype (by wall and by process CPU time), and the new tokens each row
really produced.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

MODES = {"greedy": 1, "beam4": 4}  # num_beams
# (engine, dtype): bert2bert in encdec and transformers, the same-shape BART in transformers and CTranslate2;
# encdec greedy also without copy-speculation (its default), which random weights give little to accept
NO_SPECULATION = "encdec (no speculation)"
RUNS = [("encdec", "float32"), (NO_SPECULATION, "float32"), ("transformers", "float32"),
        ("transformers BART", "float32"), ("CTranslate2", "float32"), ("encdec", "bfloat16"),
        ("transformers", "bfloat16"), ("encdec", "int8"), ("CTranslate2", "int8")]
TINY = dict(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, intermediate_size=128, vocab_size=1000,
            max_position_embeddings=128)
START, EOS, PAD = 101, 102, 0


def shapes(folder: str) -> dict[str, int]:
    """The encoder's shapes from an encdec/transformers EncoderDecoderModel config.json (the decoder
    must match: BART has one width, head count and FFN width for both sides)."""
    config = json.loads((Path(folder) / "config.json").read_text())
    keys = ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size", "vocab_size",
            "max_position_embeddings")
    encoder, decoder = ({k: config[side][k] for k in keys} for side in ("encoder", "decoder"))
    if {k: v for k, v in encoder.items() if k != "num_hidden_layers"} != {
            k: v for k, v in decoder.items() if k != "num_hidden_layers"}:
        raise SystemExit(f"encoder and decoder shapes differ ({encoder} vs {decoder}); a BART cannot match them")
    return dict(encoder, decoder_layers=decoder["num_hidden_layers"])


def tiny_bert2bert(folder: Path) -> str:
    """A tiny random bert2bert folder (the --tiny run)."""
    import encdec

    if not (folder / "config.json").exists():
        bert = encdec.BertConfig(**TINY)
        config = encdec.EncoderDecoderConfig.from_encoder_decoder_configs(
            bert, bert, decoder_start_token_id=START, pad_token_id=PAD, eos_token_id=EOS)
        torch.manual_seed(0)
        encdec.EncoderDecoderModel(config).save_pretrained(folder)
    return str(folder)


def vocabulary(size: int) -> list[str]:
    """Token strings for CTranslate2, which translates tokens, not ids: one per id."""
    names = {PAD: "[PAD]", START: "[CLS]", EOS: "[SEP]", 100: "[UNK]"}
    return [names.get(i, f"t{i}") for i in range(size)]


def convert_bart(shape: dict[str, int], out: Path) -> tuple[str, str]:
    """A random BART of `shape` saved by transformers (with a word-level tokenizer of the same
    vocabulary), and its CTranslate2 conversion; (bart folder, ctranslate2 folder). Written once."""
    bart, ct2 = out / "bart", out / "ctranslate2"
    if (ct2 / "model.bin").exists():
        return str(bart), str(ct2)
    import transformers
    from ctranslate2.converters import TransformersConverter
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit

    config = transformers.BartConfig(
        vocab_size=shape["vocab_size"], d_model=shape["hidden_size"], encoder_layers=shape["num_hidden_layers"],
        decoder_layers=shape["decoder_layers"], encoder_attention_heads=shape["num_attention_heads"],
        decoder_attention_heads=shape["num_attention_heads"], encoder_ffn_dim=shape["intermediate_size"],
        decoder_ffn_dim=shape["intermediate_size"], max_position_embeddings=shape["max_position_embeddings"],
        activation_function="gelu", pad_token_id=PAD, bos_token_id=START, eos_token_id=EOS,
        decoder_start_token_id=START, forced_eos_token_id=None, forced_bos_token_id=None,
        normalize_before=False, normalize_embedding=True)  # BART's post-norm, named for CTranslate2's converter
    torch.manual_seed(0)
    transformers.BartForConditionalGeneration(config).save_pretrained(bart)
    words = vocabulary(shape["vocab_size"])
    core = Tokenizer(WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    core.pre_tokenizer = WhitespaceSplit()
    transformers.PreTrainedTokenizerFast(tokenizer_object=core, bos_token="[CLS]", eos_token="[SEP]",
                                         unk_token="[UNK]", pad_token="[PAD]").save_pretrained(bart)
    TransformersConverter(str(bart)).convert(str(ct2), force=True)
    return str(bart), str(ct2)


def sources(batch: int, length: int, vocab: int) -> torch.Tensor:
    """`batch` sources of `length` real tokens: [CLS] random ids [SEP], seeded."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(EOS + 1, vocab, (batch, length), generator=g)
    ids[:, 0], ids[:, -1] = START, EOS
    return ids


def forced(num_beams: int, new_tokens: int) -> dict:
    """generate() kwargs: exactly `new_tokens` tokens, plain search (nothing a model config adds)."""
    return dict(num_beams=num_beams, min_new_tokens=new_tokens, max_new_tokens=new_tokens, length_penalty=1.0,
                no_repeat_ngram_size=0, early_stopping=False, repetition_penalty=1.0, do_sample=False)


def torch_model(engine: str, dtype: str, folder: str, bart: str):
    """encdec's bert2bert (int8 through its serving path), or transformers' bert2bert or BART."""
    if engine.startswith("encdec"):
        import encdec

        model = encdec.EncoderDecoderModel.from_pretrained(folder).eval()
        if dtype == "int8":
            from encdec.serving.int8 import quantize_int8

            return quantize_int8(model)
    else:
        import transformers

        transformers.logging.set_verbosity_error()
        cls = transformers.BartForConditionalGeneration if engine.endswith("BART") else transformers.EncoderDecoderModel
        model = cls.from_pretrained(bart if engine.endswith("BART") else folder).eval()
    return model.to(getattr(torch, dtype))


def worker(engine: str, dtype: str, mode: str, folder: str, bart: str, ct2: str, batch: int, source: int,
           new_tokens: int, threads: int) -> dict:
    """One warm-up call and one timed call in this (fresh) process."""
    num_beams = MODES[mode]
    ids = sources(batch, source, shapes(folder)["vocab_size"])
    if engine == "CTranslate2":
        import ctranslate2

        translator = ctranslate2.Translator(ct2, device="cpu", compute_type=dtype, intra_threads=threads,
                                            inter_threads=1)
        words = vocabulary(shapes(folder)["vocab_size"])
        tokens = [[words[i] for i in row] for row in ids.tolist()]

        def call(rows, n):
            out = translator.translate_batch(rows, beam_size=num_beams, min_decoding_length=n,
                                             max_decoding_length=n, length_penalty=1.0, max_batch_size=0)
            return [len(r.hypotheses[0]) for r in out]
    else:
        torch.set_num_threads(threads)
        model = torch_model(engine, dtype, folder, bart)
        tokens = ids
        extra = {"speculative": False} if engine == NO_SPECULATION else {}

        def call(rows, n):
            with torch.no_grad():
                out = model.generate(rows, attention_mask=torch.ones_like(rows), **forced(num_beams, n), **extra)
            return [out.shape[1] - 1] * out.shape[0]  # after the start token
    call(tokens[:2], 2)
    start, start_cpu = time.perf_counter(), time.process_time()
    lengths = call(tokens, new_tokens)
    seconds, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    return dict(engine=engine, dtype=dtype, mode=mode, seconds=seconds, cpu_s=cpu, new_tokens=sorted(set(lengths)),
                tokens_per_s=batch * new_tokens / seconds)


def run(args: list[str]) -> dict:
    done = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(results: dict[tuple[str, str, str], dict]) -> str:
    """One row per (mode, engine, dtype): tokens/s, the ratio to transformers' fp32 bert2bert and
    to CTranslate2 in the same dtype ("-" where it has none), by wall time and by process CPU time
    (steadier on a shared machine), and the new tokens produced (the forced length)."""
    from bench_common import markdown

    def ratio(r: dict, base: dict | None) -> str:
        if base is None:
            return "-"
        return f"{base['seconds'] / r['seconds']:.2f}x / {base['cpu_s'] / r['cpu_s']:.2f}x"

    header = ["mode", "engine", "dtype", "s", "tokens/s", "CPU s", "vs transformers fp32 (wall / CPU)",
              "vs CTranslate2, same dtype (wall / CPU)", "new tokens"]
    rows = []
    for (mode, engine, dtype), r in results.items():
        base, ct2 = results[mode, "transformers", "float32"], results.get((mode, "CTranslate2", dtype))
        rows.append([mode, engine, dtype, f"{r['seconds']:.2f}", f"{r['tokens_per_s']:.0f}", f"{r['cpu_s']:.2f}",
                     ratio(r, base), ratio(r, ct2), "/".join(map(str, r["new_tokens"]))])
    return markdown(header, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="an encdec bert2bert folder whose shapes to use (default: generate.py's)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--source", type=int, default=256, help="source tokens per document")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--tiny", action="store_true", help="tiny random shapes, batch 2 x 16, 4 new tokens")
    parser.add_argument("--worker", nargs=10, help=argparse.SUPPRESS)
    parser.add_argument("--prepare", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        engine, dtype, mode, folder, bart, ct2, *numbers = args.worker
        print(json.dumps(worker(engine, dtype, mode, folder, bart, ct2, *map(int, numbers))))
        return
    if args.prepare:  # in its own process too, like every engine
        print(json.dumps(convert_bart(shapes(args.prepare[0]), Path(args.prepare[1]))))
        return
    from bench_common import machine

    work = Path(tempfile.gettempdir()) / "encdec-bench-engines"
    if args.tiny:
        work = work / "tiny"
        folder = tiny_bert2bert(work / "bert2bert")
        args.batch, args.source, args.new_tokens = 2, 16, 4
    else:
        from generate import model_folder

        folder = args.model or model_folder()
        work = work / "_".join(str(v) for v in shapes(folder).values())
    bart, ct2 = run(["--prepare", folder, str(work)])
    print(machine(args.threads))
    print(f"shapes: {shapes(folder)}; batch {args.batch} x {args.source} source tokens, "
          f"{args.new_tokens} new tokens (min = max)")
    results = {}
    for mode in args.modes.split(","):
        for engine, dtype in RUNS:
            if engine == NO_SPECULATION and mode != "greedy":
                continue
            numbers = [str(n) for n in (args.batch, args.source, args.new_tokens, args.threads)]
            result = run(["--worker", engine, dtype, mode, folder, bart, ct2, *numbers])
            print(json.dumps(result), file=sys.stderr)
            results[mode, engine, dtype] = result
    print(table(results))
    print(f"\nload average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
