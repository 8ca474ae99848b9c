"""The tokenizer: byte-level BPE trained on every text the corpora hold."""

from collections.abc import Iterator
from dataclasses import dataclass

import dagster as dg

from omni_model.text import ChatTokenizer, train_tokenizer
from pipelines.assets.common import Landed
from pipelines.resources import StoreResource


class TokenizerConfig(dg.Config):
    vocab_size: int = 6_400


@dataclass
class TokenizerFile:
    path: str
    tokenizer_id: str
    vocab_size: int


def corpus_texts(corpora: list[Landed]) -> Iterator[str]:
    for landed in corpora:
        for record in landed.records():
            for turn in record.conversations:
                yield turn["content"]


@dg.asset(group_name="text", description="BPE tokenizer with the chat and placeholder tokens.")
def chat_tokenizer(
    context: dg.AssetExecutionContext,
    config: TokenizerConfig,
    store: StoreResource,
    generated_corpus: Landed,
    local_corpus: Landed,
    webdataset_corpus: Landed,
) -> TokenizerFile:
    tokenizer = train_tokenizer(
        corpus_texts([generated_corpus, local_corpus, webdataset_corpus]), config.vocab_size
    )
    path = store.path("tokenizer", f"tokenizer-{tokenizer.tokenizer_id}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    tokenizer.save(path)
    sample = "Hello! What colour is the square?"
    context.add_output_metadata(
        {
            "tokenizer_id": tokenizer.tokenizer_id,
            "vocab_size": tokenizer.vocab_size,
            "path": str(path),
            "example": f"{sample!r} -> {len(tokenizer.encode(sample))} tokens",
        }
    )
    return TokenizerFile(str(path), tokenizer.tokenizer_id, tokenizer.vocab_size)


@dg.asset_check(
    asset=chat_tokenizer,
    additional_ins={"generated_corpus": dg.AssetIn("generated_corpus")},
    description="every generated-corpus text round-trips exactly",
)
def tokenizer_round_trips(
    chat_tokenizer: TokenizerFile, generated_corpus: Landed
) -> dg.AssetCheckResult:
    tokenizer = ChatTokenizer.load(chat_tokenizer.path)
    failures = [
        text
        for text in corpus_texts([generated_corpus])
        if tokenizer.decode(tokenizer.encode(text)) != text
    ]
    return dg.AssetCheckResult(
        passed=not failures, metadata={"failures": dg.MetadataValue.json(failures[:10])}
    )
