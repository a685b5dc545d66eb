import json

import pytest
import torch

from lipkit.config import DataConfig
from lipkit.data import fashion_mnist_prompts
from lipkit.tokenizer import MIN_VOCAB, Tokenizer, TokenizerError

NAMES = fashion_mnist_prompts().class_names
CORPUS = [t.replace("{}", n) for t in DataConfig().caption_templates for n in NAMES]
L = 16


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.train(CORPUS * 20, vocab_size=1000, context_length=L)


def _length(row: torch.Tensor) -> int:
    return int((row != 0).sum())


def test_special_ids_and_properties(tok):
    assert (tok.pad_id, tok.sos_id, tok.eos_id) == (0, 1, 2)
    assert tok.context_length == L
    assert MIN_VOCAB <= tok.vocab_size < 1000  # small corpus: fewer merges than asked, real size reported


def test_layout_sos_tokens_eos_pad(tok):
    ids = tok(["a photo of a dress.", "a coat", ""])
    assert ids.dtype == torch.long and ids.shape == (3, L)
    for row in ids:
        n = _length(row)
        assert row[0] == tok.sos_id and row[n - 1] == tok.eos_id
        assert (row[n:] == tok.pad_id).all()
        assert (row[1 : n - 1] > tok.eos_id).all()  # no specials inside
    assert _length(ids[0]) > _length(ids[1]) > _length(ids[2]) == 2
    # trained merges: a seen caption takes one token per word/punctuation, not one per byte
    assert _length(ids[0]) == 2 + 6


@pytest.mark.parametrize("text", ["", " ", "   \t\n "])
def test_empty_and_whitespace_encode_as_sos_eos(tok, text):
    assert tok([text])[0].tolist() == [tok.sos_id, tok.eos_id] + [0] * (L - 2)


def test_lowercase_and_prefix_space(tok):
    assert torch.equal(tok(["A PHOTO of a Dress."]), tok(["a photo of a dress."]))
    assert torch.equal(tok(["  a dress"]), tok(["a dress"]))
    assert tok.decode(tok(["A Photo Of A Dress."])[0]) == "a photo of a dress."


def test_truncation_keeps_eos_last(tok):
    long = " ".join(["a photo of a pair of trousers"] * 10)
    ids = tok([long, "a bag"])
    row = ids[0]
    assert (row != 0).all() and row[0] == tok.sos_id and row[-1] == tok.eos_id
    assert (row[1:-1] > tok.eos_id).all()
    assert tok.decode(row).startswith("a photo of a pair of trousers a photo")
    assert torch.equal(ids[1], tok(["a bag"])[0])  # the batch does not change other rows


def test_unseen_words_encode_losslessly(tok):
    text = "zebra ünïcödé 日本 🙂 qxz"
    wide = Tokenizer.train(CORPUS, vocab_size=1000, context_length=64)
    ids = wide([text])[0]
    assert (ids < wide.vocab_size).all() and (ids[1 : _length(ids) - 1] > wide.eos_id).all()
    assert wide.decode(ids) == text  # byte-level: nothing mapped to an unknown token
    row = tok([text])[0]
    assert row[-1] == tok.eos_id and (row < tok.vocab_size).all()


def test_vocab_size_is_an_upper_bound():
    corpus = [f"word{i} token{i * 7} thing{i % 13} item{i * 3}" for i in range(3000)]
    small = Tokenizer.train(corpus, vocab_size=300, context_length=8)
    assert small.vocab_size == 300
    bigger = Tokenizer.train(corpus, vocab_size=400, context_length=8)
    assert bigger.vocab_size == 400
    assert all(int(i) < 300 for i in small(corpus[:50]).flatten())
    with pytest.raises(ValueError, match="vocab_size"):
        Tokenizer.train(corpus, vocab_size=MIN_VOCAB - 1, context_length=8)
    with pytest.raises(ValueError, match="context_length"):
        Tokenizer.train(corpus, vocab_size=300, context_length=1)


def test_save_load_round_trip(tok, tmp_path):
    texts = CORPUS + ["zebra ünïcode", "", " ".join(CORPUS[:5])]
    path = tok.save(tmp_path / "run")
    assert path == tmp_path / "run" / "tokenizer.json" and [p.name for p in path.parent.iterdir()] == ["tokenizer.json"]
    for source in (tmp_path / "run", path):  # a folder or the file itself
        loaded = Tokenizer.load(source)
        assert torch.equal(loaded(texts), tok(texts))
        assert (loaded.vocab_size, loaded.context_length) == (tok.vocab_size, L)
        assert (loaded.pad_id, loaded.sos_id, loaded.eos_id) == (0, 1, 2)
    other = Tokenizer.train(CORPUS, vocab_size=500, context_length=7)
    loaded = Tokenizer.load(other.save(tmp_path / "x" / "tokenizer.json"))
    assert loaded.context_length == 7 and loaded(["a coat"]).shape == (1, 7)


def test_load_missing_file_names_path(tmp_path):
    with pytest.raises(TokenizerError, match=str(tmp_path / "nowhere" / "tokenizer.json")):
        Tokenizer.load(tmp_path / "nowhere")


def test_load_corrupt_file_names_path(tok, tmp_path):
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{ not json")
    with pytest.raises(TokenizerError, match="tokenizer.json"):
        Tokenizer.load(tmp_path)
    data = json.loads(tok.save(tmp_path / "ok").read_text())
    data["padding"] = None  # a tokenizer without a fixed context length is not ours
    (tmp_path / "nopad.json").write_text(json.dumps(data))
    with pytest.raises(TokenizerError, match="nopad.json"):
        Tokenizer.load(tmp_path / "nopad.json")


def test_trains_from_a_generator(tok):
    again = Tokenizer.train((c for c in CORPUS * 20), vocab_size=1000, context_length=L)
    assert torch.equal(again(CORPUS), tok(CORPUS))  # deterministic training


def test_single_string_and_empty_batch(tok):
    assert torch.equal(tok("a coat"), tok(["a coat"]))
    assert tok([]).shape == (0, L)


def test_memo_gives_the_same_rows_as_a_fresh_encoding(tok, monkeypatch):
    texts = [CORPUS[0], CORPUS[1], CORPUS[0], "an unseen caption"]
    fresh = Tokenizer(tok._hf)
    expected = torch.tensor([e.ids for e in tok._hf.encode_batch(texts)])
    assert torch.equal(fresh(texts), expected)
    first = fresh(texts)
    first.zero_()  # callers own the returned tensor: the memo is untouched
    assert torch.equal(fresh(texts), expected)
    monkeypatch.setattr(Tokenizer, "MEMO_SIZE", 0)  # a full memo still encodes correctly
    assert torch.equal(Tokenizer(tok._hf)(texts), expected)


def test_eos_last_layout_gives_the_end_token_the_highest_id(tok, tmp_path):
    last = Tokenizer.train(CORPUS * 20, vocab_size=1000, context_length=L, eos_last=True)
    assert (last.pad_id, last.sos_id, last.eos_id) == (0, 1, last.vocab_size - 1)
    assert last.vocab_size == tok.vocab_size  # this small corpus: every merge either way, <eos> moved to the end
    ids = last(["a photo of a dress.", " ".join(CORPUS)])
    for row in ids:
        n = _length(row)
        assert row[n - 1] == last.eos_id == row.max() and (row[1 : n - 1] < last.eos_id).all()
    assert last.decode(ids[0]) == "a photo of a dress."
    loaded = Tokenizer.load(last.save(tmp_path))
    assert torch.equal(loaded(CORPUS), last(CORPUS)) and loaded.eos_id == last.eos_id
    assert loaded.pads_with_special_token and loaded.special_tokens == ("<pad>", "<sos>", "<eos>")
