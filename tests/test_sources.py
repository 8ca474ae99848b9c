"""Readers of user corpora: every input leaves as a record or a rejection with its reason.

Each corpus is built in tmp_path from a table of (key, expected reason keyword or None for a
good item), mixing good items with bad ones of many kinds; the tests check the reader's output
against the table item by item, then check the good records' contents.
"""

from __future__ import annotations

import io
import json
import struct
import tarfile
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import webdataset as wds
from PIL import Image

from pipelines.records import RawRecord, Rejected
from pipelines.sources.checks import Limits, SourceNotFound, normalise_transcript
from pipelines.sources.local import (
    read_audio_folder,
    read_chat_jsonl,
    read_image_jsonl,
    read_librispeech,
)
from pipelines.sources.reference_parquet import ImportedRow, read_reference_parquet
from pipelines.sources.tars import read_webdataset

LIMITS = Limits(max_audio_seconds=2.0, max_text_chars=4_000, max_image_side=256)


def tone(seconds: float = 0.3, hz: float = 440.0, rate: int = 16_000, fmt: str = "WAV") -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    buffer = io.BytesIO()
    sf.write(buffer, (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32), rate, format=fmt)
    return buffer.getvalue()


def silence(seconds: float = 0.3, rate: int = 16_000) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, np.zeros(int(seconds * rate), np.float32), rate, format="FLAC")
    return buffer.getvalue()


def nan_wav() -> bytes:
    samples = np.full(4_000, 0.1, np.float32)
    samples[100] = np.nan
    buffer = io.BytesIO()
    sf.write(buffer, samples, 16_000, format="WAV", subtype="FLOAT")
    return buffer.getvalue()


def picture(size: tuple[int, int] = (16, 12), colour: str = "red", fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, fmt)
    return buffer.getvalue()


def zero_sized_png() -> bytes:
    """A PNG whose header declares 0x0 pixels (Pillow cannot write one)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", 0, 0, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def write(path: Path, data: bytes | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)


def outcome(items: list[RawRecord | Rejected | ImportedRow]) -> dict[str, str | None]:
    """key -> rejection reason (None for a record); keys must not repeat."""
    result: dict[str, str | None] = {}
    for item in items:
        if isinstance(item, Rejected):
            key, reason = item.key.removeprefix(f"{item.source}/"), item.reason
        else:
            key, reason = item.sample_id.removeprefix(f"{item.source}/"), None
        assert key not in result, f"{key} came out twice"
        result[key] = reason
    return result


def assert_outcome(items: list, expected: dict[str, str | None]) -> dict[str, RawRecord]:
    """Every input came out exactly once, bad ones with the expected reason keyword."""
    got = outcome(items)
    assert len(items) == len(expected)
    assert set(got) == set(expected)
    for key, keyword in expected.items():
        if keyword is None:
            assert got[key] is None, f"{key} rejected: {got[key]}"
        else:
            assert got[key] is not None, f"{key} was accepted, expected {keyword!r}"
            assert keyword in got[key], f"{key}: {got[key]!r} lacks {keyword!r}"
    return {
        item.sample_id.removeprefix(f"{item.source}/"): item
        for item in items
        if not isinstance(item, Rejected)
    }


def assert_stable(read, *args, **kwargs) -> list:
    """Two reads give the same items in the same order; sample ids are unique."""
    first, second = list(read(*args, **kwargs)), list(read(*args, **kwargs))
    assert [repr(item) for item in first] == [repr(item) for item in second]
    ids = [item.sample_id for item in first if not isinstance(item, Rejected)]
    assert len(ids) == len(set(ids))
    return first


def test_librispeech_layout(tmp_path: Path) -> None:
    root = tmp_path / "LibriSpeech"
    chapter = root / "19" / "198"
    good = {"0000": tone(hz=300), "0001": tone(hz=500, fmt="FLAC")}
    for utt, data in good.items():
        write(chapter / f"19-198-{utt}.flac", data)
    write(chapter / "19-198-0002.flac", b"\x00\x01garbage" * 50)
    write(chapter / "19-198-0003.flac", b"")
    write(chapter / "19-198-0005.flac", tone())
    write(chapter / "19-198-0006.flac", tone())
    write(chapter / "19-198-0007.flac", tone(seconds=3.0))
    write(chapter / "19-198-0008.flac", silence())
    write(chapter / "19-198-0009.flac", tone())
    write(chapter / "19-198-0010.flac", tone())
    lines = [
        b"19-198-0000 HELLO WORLD",
        b"19-198-0001 A SECOND GOOD ONE",
        b"19-198-0002 CORRUPT AUDIO",
        b"19-198-0003 EMPTY FILE",
        b"19-198-0004 NO AUDIO FOR THIS LINE",
        b"19-198-0005 CAF\xc3 BAD UTF8",
        b"19-198-0006",
        b"19-198-0007 TOO LONG A CLIP",
        b"19-198-0008 ONLY SILENCE",
        b"",
        b"19-198-0000 A DUPLICATE LINE",
        b"bad/id SOME TEXT",
        b"19-198-0010 " + b"WORD " * 900,
    ]
    write(chapter / "19-198.trans.txt", b"\n".join(lines) + b"\n")
    write(root / "26" / "495" / "26-495-0000.flac", tone())  # a chapter without transcripts
    write(root / "26" / "496" / "26-496-0000.wav", tone(hz=700))
    write(root / "26" / "496" / "26-496.trans.txt", "26-496-0000 THIRD GOOD ONE\n")

    items = assert_stable(read_librispeech, root, limits=LIMITS)
    listing = "19/198/19-198.trans.txt"
    records = assert_outcome(
        items,
        {
            "19/198/19-198-0000": None,
            "19/198/19-198-0001": None,
            "26/496/26-496-0000": None,
            "19/198/19-198-0002": "not readable as audio",
            "19/198/19-198-0003": "empty file",
            "19/198/19-198-0004": "no audio file",
            "19/198/19-198-0005": "not valid UTF-8",
            "19/198/19-198-0006": "empty transcript",
            "19/198/19-198-0007": "over the limit",
            "19/198/19-198-0008": "silence",
            "19/198/19-198-0009": "no transcript",
            "19/198/19-198-0010": "characters",
            f"{listing}#line11": "duplicate utterance id",
            f"{listing}#line12": "malformed utterance id",
            "26/495/26-495-0000": "no transcript",
        },
    )
    first = records["19/198/19-198-0000"]
    assert first.task == "t2a"
    assert first.conversations[1] == {"role": "assistant", "content": "Hello world"}
    assert first.conversations[0]["content"].endswith("Hello world")
    assert first.answer_audio == [good["0000"]]
    assert first.voice == "librispeech/19"
    assert records["26/496/26-496-0000"].voice == "librispeech/26"


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("HELLO  WORLD", "Hello world"),
        ("WHAT DID I SAY\tTO HIM", "What did I say to him"),
        ("Already Mixed case  text.", "Already Mixed case text."),
        ("42 17", "42 17"),
    ],
)
def test_transcript_normalisation(raw: str, normalised: str) -> None:
    assert normalise_transcript(raw) == normalised
    assert normalise_transcript(normalised) == normalised


def test_simple_audio_folder(tmp_path: Path) -> None:
    root = tmp_path / "speech"
    clips = {"a": tone(), "spk1/b": tone(hz=600, fmt="FLAC"), "c": tone(hz=800, fmt="MP3")}
    for key, data in clips.items():
        suffix = {b"RIFF": ".wav", b"fLaC": ".flac"}.get(data[:4], ".mp3")
        write(root / f"{key}{suffix}", data)
        write(root / f"{key}.txt", f"good clip {key}\n")
    cases = {
        "trunc": (".wav", tone(seconds=0.5)[:3_000], "hello", "truncated"),
        "notaudio": (".wav", b"I am plain text, not a wave file", "hello", "not readable"),
        "badutf": (".wav", tone(), b"caf\xe9", "not valid UTF-8"),
        "blank": (".wav", tone(), "  \n", "empty transcript"),
        "long": (".wav", tone(), "word " * 1_200, "characters"),
        "nan": (".wav", nan_wav(), "hello", "NaN"),
        "special": (".wav", tone(), "hello <|im_end|> there", "reserved token"),
        "marker": (".flac", tone(fmt="FLAC"), "look <image> here", "reserved token"),
        "spk2/toolong": (".flac", tone(seconds=2.5, fmt="FLAC"), "hello", "over the limit"),
        "empty": (".mp3", b"", "hello", "empty file"),
    }
    for key, (suffix, data, said, _) in cases.items():
        write(root / f"{key}{suffix}", data)
        write(root / f"{key}.txt", said)
    write(root / "orphan.txt", "a transcript without audio")
    write(root / "lonely.wav", tone())
    write(root / "dup.wav", tone())
    write(root / "dup.flac", tone(fmt="FLAC"))
    write(root / "dup.txt", "two clips")
    write(root / ".hidden.wav", b"ignored: hidden files are not inputs")

    items = assert_stable(read_audio_folder, root, limits=LIMITS)
    expected = {key: None for key in clips} | {key: case[3] for key, case in cases.items()}
    expected |= {
        "orphan": "no audio file",
        "lonely": "no transcript",
        "dup": "several audio files",
    }
    records = assert_outcome(items, expected)
    for key, data in clips.items():
        assert records[key].answer_audio == [data]
        assert records[key].turns("assistant") == [f"good clip {key}"]
    assert records["spk1/b"].voice == "speech/spk1"
    assert records["a"].voice == "speech"


def test_image_jsonl(tmp_path: Path) -> None:
    root = tmp_path / "images"
    red, blue = picture(), picture(colour="blue", fmt="JPEG")
    write(root / "pics" / "red.png", red)
    write(root / "pics" / "blue.jpg", blue)
    write(root / "pics" / "truncated.png", picture((64, 64))[:60])
    write(root / "pics" / "truncated.jpg", picture((64, 64), fmt="JPEG")[:-10])
    write(root / "pics" / "fake.png", b"not an image at all")
    write(root / "pics" / "zero.png", zero_sized_png())
    write(root / "pics" / "wide.png", picture((300, 10)))
    write(root / "pics" / "empty.png", b"")
    write(tmp_path / "secret.png", red)
    lines: list[tuple[bytes, str | None]] = [
        (b'{"image": "pics/red.png", "question": "What colour?", "answer": "Red."}', None),
        (b'{"image": "pics/blue.jpg", "caption": "A blue square."}', None),
        (
            b'{"image": "pics/red.png", "question": "<image>\\nWhat is it?", "answer": "A box."}',
            None,
        ),
        (b'{"image": "pics/red.png", "question": "Colour?"', "invalid JSON"),
        (b"[1, 2]", "not an object"),
        (b'{"image": "pics/missing.png", "caption": "gone"}', "missing image file"),
        (b'{"image": "pics/truncated.png", "caption": "cut"}', "does not decode"),
        (b'{"image": "pics/truncated.jpg", "caption": "cut"}', "truncated"),
        (b'{"image": "pics/fake.png", "caption": "fake"}', "not a readable"),
        (b'{"image": "pics/zero.png", "caption": "zero"}', "zero-sized"),
        (b'{"image": "pics/wide.png", "caption": "wide"}', "over the limit"),
        (b'{"image": "pics/empty.png", "caption": "empty"}', "empty file"),
        (b'{"image": "pics/red.png"}', "no question/answer or caption"),
        (b'{"image": "pics/red.png", "question": "What?", "answer": "  "}', "empty answer"),
        (b'{"image": "../secret.png", "caption": "escape"}', "leaves the corpus folder"),
        (b'{"image": "pics/red.png", "question": 5, "answer": "x"}', "not text"),
        (b'{"image": "pics/red.png", "caption": "caf\xe9"}', "not valid UTF-8"),
        (b'{"caption": "no image key"}', "no image path"),
    ]
    body = (
        b"\n".join(line for line, _ in lines[:5])
        + b"\n\n"
        + b"\n".join(line for line, _ in lines[5:])
    )
    write(root / "data.jsonl", body + b"\n")
    numbers = [*range(1, 6), *range(7, 7 + len(lines) - 5)]  # line 6 is blank: not an input
    expected = {
        f"data.jsonl#line{number}": reason
        for number, (_, reason) in zip(numbers, lines, strict=True)
    }

    items = assert_stable(read_image_jsonl, root / "data.jsonl", limits=LIMITS)
    records = assert_outcome(items, expected)
    qa, caption, llava = (records[f"data.jsonl#line{n}"] for n in (1, 2, 3))
    assert qa.task == "i2t" and qa.image == red
    assert qa.conversations == [
        {"role": "user", "content": "<image>\nWhat colour?"},
        {"role": "assistant", "content": "Red."},
    ]
    assert caption.image == blue and caption.turns("assistant") == ["A blue square."]
    assert llava.turns("user") == ["<image>\nWhat is it?"]
    assert next(item.key for item in items if isinstance(item, Rejected)) == "data.jsonl#line4"


def test_chat_jsonl(tmp_path: Path) -> None:
    lines: list[tuple[object, str | None]] = [
        (
            {
                "conversations": [
                    {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "Hello!"},
                    {"role": "user", "content": "2+2?"},
                    {"role": "assistant", "content": "4"},
                ]
            },
            None,
        ),
        (
            {
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "Name a colour."},
                    {"role": "assistant", "content": "Blue."},
                ]
            },
            None,
        ),
        ({"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"}, None),
        (
            {"conversations": [{"from": "human", "value": "Hey"}, {"from": "gpt", "value": "Hi"}]},
            None,
        ),
        ({"conversations": [{"role": "robot", "content": "beep"}]}, "unknown role 'robot'"),
        ({"messages": [{"role": "user", "content": "Anyone?"}]}, "last turn is not"),
        (
            {"messages": [{"role": "user", "content": " "}, {"role": "assistant", "content": "x"}]},
            "empty turn 0 content",
        ),
        (b'{"messages": [', "invalid JSON"),
        ({"foo": 1}, "no conversations, messages or instruction/output"),
        (b'{"instruction": "caf\xe9", "output": "x"}', "not valid UTF-8"),
        (
            {
                "messages": [
                    {"role": "user", "content": "<image> what?"},
                    {"role": "assistant", "content": "x"},
                ]
            },
            "reserved token <image>",
        ),
        ({"conversations": "hello"}, "not a non-empty list"),
        ({"instruction": "Say it.", "output": "x" * 5_000}, "characters"),
        ({"instruction": "Say it."}, "no conversations, messages or instruction/output"),
        ({"messages": ["just a string"]}, "not an object"),
    ]
    encoded = [line if isinstance(line, bytes) else json.dumps(line).encode() for line, _ in lines]
    write(tmp_path / "chat.jsonl", b"\n".join(encoded))

    items = assert_stable(read_chat_jsonl, tmp_path / "chat.jsonl", limits=LIMITS)
    expected = {f"chat.jsonl#line{n}": reason for n, (_, reason) in enumerate(lines, start=1)}
    records = assert_outcome(items, expected)
    assert all(record.task == "text" for record in records.values())
    assert records["chat.jsonl#line1"].turns("assistant") == ["Hello!", "4"]
    assert records["chat.jsonl#line2"].conversations[0] == {
        "role": "system",
        "content": "Be brief.",
    }
    assert records["chat.jsonl#line3"].turns("user") == ["Add the numbers.\n\n2 and 3"]
    assert records["chat.jsonl#line4"].conversations == [
        {"role": "user", "content": "Hey"},
        {"role": "assistant", "content": "Hi"},
    ]


def test_webdataset_tars(tmp_path: Path) -> None:
    folder = tmp_path / "tars"
    folder.mkdir()
    wav, flac, png, jpg = tone(), tone(hz=550, fmt="FLAC"), picture(), picture(fmt="JPEG")
    dialogue = {
        "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]
    }
    samples: list[tuple[dict, str | None]] = [
        ({"__key__": "s0", "wav": wav, "txt": "first clip"}, None),
        (
            {"__key__": "s1", "flac": flac, "json": json.dumps({"text": "two", "speaker": "al"})},
            None,
        ),
        ({"__key__": "s2", "png": png, "txt": "a red square"}, None),
        (
            {"__key__": "s3", "jpg": jpg, "json": json.dumps({"question": "Q?", "answer": "A."})},
            None,
        ),
        ({"__key__": "s4", "json": json.dumps(dialogue)}, None),
        ({"__key__": "s5", "wav": b"RIFF-but-not-really", "txt": "x"}, "not readable as audio"),
        ({"__key__": "s6", "wav": wav}, "missing transcript"),
        ({"__key__": "s7", "png": png[:50], "txt": "cut"}, "does not decode"),
        ({"__key__": "s8", "wav": wav, "png": png, "txt": "x"}, "both audio and image"),
        ({"__key__": "s9", "txt": "lonely text"}, "no audio, image or chat"),
        ({"__key__": "s10", "wav": wav, "json": "{oops"}, "invalid JSON"),
        ({"__key__": "s11", "mp3": tone(seconds=3, fmt="MP3"), "txt": "long"}, "over the limit"),
        ({"__key__": "s12", "wav": wav, "txt": b"\xff\xfe"}, "not valid UTF-8"),
    ]
    with wds.TarWriter(str(folder / "shard-0.tar")) as sink:
        for sample, _ in samples:
            sink.write(sample)
    with wds.TarWriter(str(folder / "shard-1.tar")) as sink:
        for index in range(4):
            sink.write({"__key__": f"t{index}", "wav": tone(hz=300 + 50 * index), "txt": "ok"})
    data = (folder / "shard-1.tar").read_bytes()
    with tarfile.open(folder / "shard-1.tar") as archive:
        cut = archive.getmember("t3.wav").offset_data + 100
    (folder / "shard-1.tar").write_bytes(data[:cut])  # damaged inside the last sample
    write(folder / "shard-2.tar", b"this is no tar file " * 30)

    items = assert_stable(read_webdataset, folder, limits=LIMITS)
    expected = {f"shard-0.tar/{sample['__key__']}": reason for sample, reason in samples}
    expected |= {f"shard-1.tar/t{index}": None for index in range(3)}
    expected |= {"shard-1.tar": "damaged tar after 3 samples", "shard-2.tar": "after 0 samples"}
    records = assert_outcome(items, expected)
    assert records["shard-0.tar/s0"].answer_audio == [wav]
    assert records["shard-0.tar/s0"].voice == "webdataset"
    assert records["shard-0.tar/s1"].voice == "webdataset/al"
    assert records["shard-0.tar/s1"].turns("assistant") == ["two"]
    assert records["shard-0.tar/s2"].image == png
    assert records["shard-0.tar/s2"].turns("assistant") == ["a red square"]
    assert records["shard-0.tar/s3"].turns("user") == ["<image>\nQ?"]
    assert records["shard-0.tar/s4"].task == "text"
    damaged = next(
        item for item in items if isinstance(item, Rejected) and item.key == "shard-1.tar"
    )
    assert str(tmp_path) not in damaged.reason  # reasons are the same on every machine


def test_repeated_tar_key_is_rejected(tmp_path: Path) -> None:
    """webdataset yields a key twice when its members are not adjacent; ids must stay unique."""
    first, second = tone(hz=300), tone(hz=900)
    with wds.TarWriter(str(tmp_path / "dup.tar")) as sink:
        sink.write({"__key__": "a", "wav": first, "txt": "first"})
        sink.write({"__key__": "b", "wav": second, "txt": "between"})
        sink.write({"__key__": "a", "wav": second, "txt": "again"})
    items = list(read_webdataset(tmp_path / "dup.tar", limits=LIMITS))
    assert [type(item).__name__ for item in items] == ["RawRecord", "RawRecord", "Rejected"]
    assert items[0].answer_audio == [first]
    assert (items[2].key, items[2].reason) == ("dup.tar/a", "duplicate sample id")


SCHEMA = pa.schema(
    [
        ("conversations", pa.string()),
        ("question_audios", pa.list_(pa.binary())),
        ("answer_audios", pa.list_(pa.list_(pa.int64()))),
        ("image_bytes", pa.binary()),
        ("ref_audios", pa.list_(pa.int64())),
        ("spk_emb", pa.list_(pa.float32())),
    ]
)


def chat(*contents: str) -> str:
    roles = ("user", "assistant")
    return json.dumps([{"role": roles[i % 2], "content": text} for i, text in enumerate(contents)])


def row(conversations: str | None, **columns: object) -> dict:
    return {name: columns.get(name) for name in SCHEMA.names} | {"conversations": conversations}


def test_reference_parquet(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    codes = [int(code) for code in rng.integers(0, 2048, 8 * 5)]
    wav, png = tone(), picture()
    ref, spk = list(range(16)), [0.25, -0.5, 1.0]
    rows: list[tuple[dict, str | None]] = [
        (row(chat("Say hi.", "Hi!"), answer_audios=[codes], ref_audios=ref, spk_emb=spk), None),
        (row(chat("spoken", "Heard."), question_audios=[wav], answer_audios=[codes]), None),
        (row(chat("<image>\nWhat?", "A red square."), image_bytes=png), None),
        (row("[{oops"), "invalid JSON"),
        (row(chat("q", "a"), answer_audios=[[*codes[:-1], 2048]]), "code 2048 outside 0..2047"),
        (row(chat("q", "a"), answer_audios=[[-1, *codes[1:]]]), "code -1 outside"),
        (row(chat("q", "a"), answer_audios=[codes[:12]]), "12 codes, not a multiple of 8"),
        (row(chat("q", "a", "q2", "a2"), answer_audios=[codes]), "1 answer code lists for 2"),
        (
            row(chat("q", "a"), question_audios=[wav, wav], answer_audios=[codes]),
            "2 question clips for 1 user turns",
        ),
        (row(chat("<image> q", "a"), image_bytes=b"not a png"), "not a readable"),
        (row(json.dumps([{"role": "bot", "content": "x"}])), "unknown role 'bot'"),
        (row(chat("q", "a"), answer_audios=[codes], ref_audios=[5_000] * 8), "ref_audios: code"),
        (row(chat("q", "a"), answer_audios=[codes], spk_emb=[0.1, float("nan")]), "non-finite"),
        (
            row(chat("q", "a"), question_audios=[b"junk"], answer_audios=[codes]),
            "question audio 0: not readable",
        ),
        (row(chat("q", "a"), answer_audios=[codes * 6]), "over the limit"),
        (row(None), "not JSON text"),
        (row(chat("q", "a"), image_bytes=png), "<image> marker"),
        (row(chat("q", "a"), answer_audios=[[]]), "empty"),
        (row(chat("q", "a"), question_audios=[wav]), "a2a row without answer codes"),
    ]
    folder = tmp_path / "reference"
    folder.mkdir()
    table = pa.Table.from_pylist([r for r, _ in rows], schema=SCHEMA)
    pq.write_table(table, folder / "a.parquet", row_group_size=7)
    pq.write_table(pa.table({"other": [1, 2]}), folder / "b.parquet")
    write(folder / "c.parquet", b"definitely not parquet" * 10)

    items = assert_stable(
        read_reference_parquet, folder, codec_id="mimi-test", limits=LIMITS, batch_rows=4
    )
    expected = {f"a.parquet#row{n}": reason for n, (_, reason) in enumerate(rows)}
    expected |= {"b.parquet": "no conversations column", "c.parquet": "unreadable parquet"}
    imported = assert_outcome(items, expected)
    t2a, a2a, i2t = (imported[f"a.parquet#row{n}"] for n in range(3))
    assert (t2a.task, a2a.task, i2t.task) == ("t2a", "a2a", "i2t")
    assert t2a.answer_codes == [codes] and t2a.answer_frames() == [5]
    assert t2a.ref_codes == ref and t2a.spk_emb == spk
    assert t2a.codec_id == "mimi-test"
    assert a2a.question_audio == [wav]
    assert i2t.image == png and i2t.answer_codes == []


def test_missing_locations_are_configuration_errors(tmp_path: Path) -> None:
    with pytest.raises(SourceNotFound, match="no such folder"):
        list(read_librispeech(tmp_path / "absent"))
    with pytest.raises(SourceNotFound, match=r"no \*\.tar files"):
        list(read_webdataset(tmp_path))
