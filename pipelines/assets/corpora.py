"""Sources: each corpus normalised to webdataset tars under `assets_store/raw/{source}/`.

Every source is its own asset so that the UI shows where each record came from, and each
lands its rejects in the quarantine. Local folders and tars are empty unless configured.
"""

from pathlib import Path

import dagster as dg
from pydantic import Field

from pipelines.assets.common import Landed, accounting_check, land_records
from pipelines.resources import StoreResource
from pipelines.sources.generated import CorpusSettings, generate_corpus
from pipelines.sources.local import (
    read_audio_folder,
    read_chat_jsonl,
    read_image_jsonl,
    read_librispeech,
)
from pipelines.sources.tars import read_webdataset


class GeneratedCorpusConfig(dg.Config):
    """`tiny` for tests, `small` for the demo (minutes on 2 cores), `large` for experiments."""

    size: str = "small"
    seed: int = 0


class LocalCorpusConfig(dg.Config):
    """Folders on this machine; every list may be empty.

    librispeech_dirs: `speaker/chapter/speaker-chapter-utt.flac` + `.trans.txt` files.
    speech_dirs: `name.wav|.flac|.mp3` beside `name.txt`.
    image_jsonl: lines {"image": path, "question", "answer"} or {"image", "caption"}.
    chat_jsonl: lines {"conversations"|"messages": [...]} or {"instruction", "output"}.
    """

    librispeech_dirs: list[str] = Field(default_factory=list)
    speech_dirs: list[str] = Field(default_factory=list)
    image_jsonl: list[str] = Field(default_factory=list)
    chat_jsonl: list[str] = Field(default_factory=list)


class WebdatasetCorpusConfig(dg.Config):
    """webdataset tar shards (key.wav/.flac/.mp3 + key.txt/.json, key.jpg/.png + caption)."""

    tars: list[str] = Field(default_factory=list)


@dg.asset(group_name="corpora", description="Templated Q&A, espeak voices, drawn images.")
def generated_corpus(
    context: dg.AssetExecutionContext, config: GeneratedCorpusConfig, store: StoreResource
) -> Landed:
    settings = CorpusSettings.named(config.size, config.seed)
    context.add_output_metadata({"settings": dg.MetadataValue.json(settings.as_dict())})
    items = generate_corpus(settings)
    return land_records(context, store, "generated_corpus", store.path("raw", "generated"), items)


@dg.asset(group_name="corpora", description="Speech, image and chat folders on this machine.")
def local_corpus(
    context: dg.AssetExecutionContext, config: LocalCorpusConfig, store: StoreResource
) -> Landed:
    readers = [
        (read_librispeech, "librispeech", config.librispeech_dirs),
        (read_audio_folder, "speech", config.speech_dirs),
        (read_image_jsonl, "images", config.image_jsonl),
        (read_chat_jsonl, "chat", config.chat_jsonl),
    ]

    def items():
        for read, kind, paths in readers:
            for path in map(Path, paths):
                yield from read(path, source=f"{kind}:{path.name}")

    return land_records(context, store, "local_corpus", store.path("raw", "local"), items())


@dg.asset(group_name="corpora", description="webdataset tar shards of speech and images.")
def webdataset_corpus(
    context: dg.AssetExecutionContext, config: WebdatasetCorpusConfig, store: StoreResource
) -> Landed:
    items = read_webdataset([Path(p) for p in config.tars]) if config.tars else iter(())
    return land_records(context, store, "webdataset_corpus", store.path("raw", "webdataset"), items)


CORPUS_ASSETS = (generated_corpus, local_corpus, webdataset_corpus)


def corpus_check(corpus: dg.AssetsDefinition) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=corpus,
        name="accounts_for_every_record",
        description="every input is a record in the tars or a quarantine row",
    )
    def check(store: StoreResource, landed: Landed) -> dg.AssetCheckResult:
        return accounting_check(store, landed)

    return check


CORPUS_CHECKS = [corpus_check(asset) for asset in CORPUS_ASSETS]
