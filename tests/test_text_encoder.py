"""Text encoders: ditkit's word encoder (vocabulary, padding, files) and Hugging Face T5 / CLIP
encoders loaded from local folders that the tests build from tiny random configurations."""

import builtins
import json

import pytest
import torch

from ditkit.io.checkpoint import CheckpointError
from ditkit.models.text_encoder import (
    HFTextEncoder,
    WordEncoderConfig,
    WordTextEncoder,
    load_text_encoder,
    save_text_encoder,
)
from ditkit.shapes.data import ShapesDataset
from ditkit.shapes.prompts import shapes_vocabulary

TINY = WordEncoderConfig(dim=16, depth=1, num_heads=2, max_length=12)


def test_vocabulary_covers_every_caption_word_and_unknown_words_map_to_unk():
    enc = WordTextEncoder(TINY, shapes_vocabulary())
    unk = enc.tokenizer.index["<unk>"]
    ds = ShapesDataset(300, seed=5)
    for i in range(300):
        ids, mask = enc.tokenize([ds.caption(i)])
        assert unk not in ids[0].tolist(), ds.caption(i)
        assert mask.all() and ids.shape[1] == 9  # <bos> + 8 words
    ids, mask = enc.tokenize(["A Zebra, on a RED background!", ""])
    words = [enc.vocab[i] for i in ids[0]]
    assert words == ["<bos>", "a", "<unk>", "on", "a", "red", "background"]
    assert mask[1].tolist() == [True] + [False] * 6  # the empty prompt is <bos> alone
    assert [enc.vocab[i] for i in ids[1, 1:]] == ["<pad>"] * 6
    assert set(shapes_vocabulary()) <= set(enc.vocab)


def test_word_encoder_ignores_padding_and_truncates():
    torch.manual_seed(0)
    enc = WordTextEncoder(TINY, shapes_vocabulary()).eval()
    short, m_short = enc.encode(["a red circle"])
    ids, mask = enc.tokenize(["a red circle"], pad_to=10)
    ids[0, 4:] = 7  # garbage under the padding mask
    padded = enc(ids, mask)
    torch.testing.assert_close(padded[:, :4], short, atol=1e-6, rtol=1e-6)
    ids, _ = enc.tokenize(["a " * 40])
    assert ids.shape[1] == TINY.max_length
    with pytest.raises(ValueError, match="strings"):
        enc.tokenize([3])


def test_word_encoder_files_roundtrip(tmp_path):
    torch.manual_seed(1)
    enc = WordTextEncoder(TINY, words=["hello", "world"])
    save_text_encoder(enc, tmp_path / "te")
    assert json.loads((tmp_path / "te" / "vocab.json").read_text()) == ["<pad>", "<unk>", "<bos>", "hello", "world"]
    back = load_text_encoder(tmp_path / "te")
    assert isinstance(back, WordTextEncoder) and back.config == TINY and back.vocab == enc.vocab
    a, ma = enc.eval().encode(["hello world", "world"])
    b, mb = back.encode(["hello world", "world"])
    assert torch.equal(a, b) and torch.equal(ma, mb)
    (tmp_path / "te" / "vocab.json").write_text('{"not": "a list"}')
    with pytest.raises(CheckpointError, match="list of words"):
        load_text_encoder(tmp_path / "te")


# ----------------------------------------------------------------------------- Hugging Face encoders

WORDS = ["<pad>", "<unk>", "</s>", "<s>", "a", "red", "triangle", "on", "green", "background"]


def _tokenizer(tf):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 2)])
    return tf.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", eos_token="</s>",
                                      bos_token="<s>")


def _tiny_hf(kind: str, folder):
    tf = pytest.importorskip("transformers")
    torch.manual_seed(0)
    if kind == "t5":
        model = tf.T5EncoderModel(tf.T5Config(vocab_size=len(WORDS), d_model=16, d_kv=8, d_ff=32, num_layers=1,
                                              num_heads=2, pad_token_id=0, eos_token_id=2, decoder_start_token_id=0))
    else:
        model = tf.CLIPTextModel(tf.CLIPTextConfig(vocab_size=len(WORDS), hidden_size=16, intermediate_size=32,
                                                   num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=16,
                                                   pad_token_id=0, bos_token_id=3, eos_token_id=2))
    model.save_pretrained(folder)
    _tokenizer(tf).save_pretrained(folder)
    return model.eval()


@pytest.mark.parametrize("kind", ["t5", "clip"])
def test_hf_encoder_from_a_local_folder(kind, tmp_path):
    reference = _tiny_hf(kind, tmp_path / kind)
    enc = HFTextEncoder(tmp_path / kind)
    assert enc.text_dim == 16 and not enc.trainable
    assert type(enc.model).__name__ == ("T5EncoderModel" if kind == "t5" else "CLIPTextModel")
    prompts = ["a red triangle on a green background", "", "zebra"]
    tokens, mask = enc.encode(prompts)
    assert tokens.shape == (3, 8, 16) and tokens.dtype == torch.float32
    assert mask.sum(1).tolist() == [8, 1, 2]  # 7 words + </s>; "" is </s> alone; zebra -> <unk> </s>
    with torch.no_grad():  # the same ids straight through the transformers model
        want = reference(input_ids=torch.tensor([[4, 5, 6, 7, 4, 8, 9, 2]])).last_hidden_state
    torch.testing.assert_close(tokens[:1], want, atol=1e-6, rtol=1e-5)
    assert not any(p.requires_grad for p in enc.parameters())
    # a model folder copies it with save_pretrained; loading dispatches on the folder's contents
    save_text_encoder(enc, tmp_path / "copy")
    back = load_text_encoder(tmp_path / "copy")
    assert isinstance(back, HFTextEncoder) and back.max_length == enc.max_length
    t2, m2 = back.encode(prompts)
    assert torch.equal(tokens, t2) and torch.equal(mask, m2)


def test_hf_encoder_in_the_diffusers_pipeline_layout(tmp_path):
    _tiny_hf("t5", tmp_path / "pipe" / "text_encoder")
    tf = pytest.importorskip("transformers")
    _tokenizer(tf).save_pretrained(tmp_path / "pipe" / "tokenizer")
    enc = HFTextEncoder(tmp_path / "pipe", hidden_layer=-2)
    tokens, mask = enc.encode(["a red triangle"])
    assert tokens.shape == (1, 4, 16) and mask.all()


def test_hf_encoder_errors(tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    with pytest.raises(CheckpointError, match="no such text encoder"):
        HFTextEncoder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="not a Hugging Face text encoder"):
        HFTextEncoder(tmp_path / "empty")
    real_import = builtins.__import__

    def no_transformers(name, *args, **kwargs):
        if name == "transformers":
            raise ImportError("No module named 'transformers'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_transformers)
    with pytest.raises(ValueError, match=r"pip install 'ditkit\[interop\]'"):
        HFTextEncoder(tmp_path / "empty")
