"""Tiny configs shared by the tests: the same family pairs built in transformers (the reference)
and in encdec, with weights moved through a saved folder."""

from __future__ import annotations

import torch

TINY_BERT = dict(
    vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
    intermediate_size=37, max_position_embeddings=64,
)
TINY_ROBERTA = dict(TINY_BERT, pad_token_id=1, bos_token_id=0, eos_token_id=2, max_position_embeddings=66, type_vocab_size=1)
# Different width from the encoder, so enc_to_dec_proj is exercised.
TINY_GPT2 = dict(vocab_size=99, n_embd=48, n_layer=2, n_head=4, n_positions=64, bos_token_id=98, eos_token_id=98)

# name -> (encoder family, encoder kwargs, decoder family, decoder kwargs, top-level kwargs)
PAIRS = {
    "bert2bert": ("bert", TINY_BERT, "bert", TINY_BERT, dict(decoder_start_token_id=2, pad_token_id=0, eos_token_id=3)),
    "roberta2roberta": ("roberta", TINY_ROBERTA, "roberta", TINY_ROBERTA, dict(decoder_start_token_id=0, pad_token_id=1, eos_token_id=2)),
    "bert2gpt2": ("bert", TINY_BERT, "gpt2", TINY_GPT2, dict(decoder_start_token_id=98, pad_token_id=98, eos_token_id=98)),
    "bertshare": ("bert", TINY_BERT, "bert", TINY_BERT, dict(decoder_start_token_id=2, pad_token_id=0, eos_token_id=3, tie_encoder_decoder=True)),
}


def reference_model(name: str, seed: int = 0):
    """transformers' EncoderDecoderModel for a pair, in eval mode. For BERTShare the encoder is
    made equal to the decoder's base model, since transformers 5 keeps two copies."""
    import transformers

    enc_type, enc_kw, dec_type, dec_kw, top = PAIRS[name]
    classes = {"bert": transformers.BertConfig, "roberta": transformers.RobertaConfig, "gpt2": transformers.GPT2Config}
    config = transformers.EncoderDecoderConfig.from_encoder_decoder_configs(
        classes[enc_type](**enc_kw), classes[dec_type](**dec_kw)
    )
    for key, value in top.items():
        setattr(config, key, value)
    torch.manual_seed(seed)
    model = transformers.EncoderDecoderModel(config=config).eval()
    if top.get("tie_encoder_decoder"):
        base = model.decoder.base_model.state_dict()
        model.encoder.load_state_dict({k: base[k] for k in base}, strict=False)
    return model


def spread_weights(model, std: float = 0.25, seed: int = 0):
    """Larger random weights, so that the tiny model's output depends on its source (with the
    default 0.02 every source gives the same tokens, which would hide mix-ups between rows)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


def encdec_config(name: str):
    import encdec

    enc_type, enc_kw, dec_type, dec_kw, top = PAIRS[name]
    classes = {"bert": encdec.BertConfig, "roberta": encdec.RobertaConfig, "gpt2": encdec.GPT2Config}
    return encdec.EncoderDecoderConfig.from_encoder_decoder_configs(
        classes[enc_type](**enc_kw), classes[dec_type](**dec_kw), **top
    )


def padded_batch(name: str, batch: int = 3, src_len: int = 11, tgt_len: int = 7, seed: int = 1):
    """Sources and labels with padding inside the batch: rows 1 and 2 shorter than row 0."""
    g = torch.Generator().manual_seed(seed)
    enc_pad = PAIRS[name][4]["pad_token_id"] if name != "bert2gpt2" else 0
    input_ids = torch.randint(3, 98, (batch, src_len), generator=g)
    attention_mask = torch.ones(batch, src_len, dtype=torch.long)
    attention_mask[1, src_len - 4:] = 0
    attention_mask[2, 4:] = 0
    input_ids[attention_mask == 0] = enc_pad
    labels = torch.randint(3, 98, (batch, tgt_len), generator=g)
    labels[1, tgt_len - 2:] = -100
    labels[2, 2:] = -100
    return dict(input_ids=input_ids, attention_mask=attention_mask, labels=labels)


def train_losses(model, batch: dict, steps: int, lr: float, **forward_kwargs) -> list[float]:
    """Losses of `steps` AdamW steps on one batch, in train mode (for "does it learn" tests)."""
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss = model(**batch, **forward_kwargs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses


def summaries_one_by_one(model, encoder_tokenizer, decoder_tokenizer, texts: list[str], **settings) -> list[str]:
    """What a summarising front end should return: each text alone (no padding) through
    `model.generate(**settings)`, decoded without special tokens, whitespace collapsed to one line."""
    out = []
    for text in texts:
        enc = encoder_tokenizer([text])
        ids = model.generate(enc["input_ids"], attention_mask=enc["attention_mask"], **settings)
        out.append(" ".join(decoder_tokenizer.decode(ids[0], skip_special_tokens=True).split()))
    return out
