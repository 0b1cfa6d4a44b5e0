"""Export a saved model as a portable directory: model.safetensors, config.json, tokenizer.json (and
for seq2seq with a separate target vocabulary target_tokenizer.json), or with ``format=transformers`` a directory
that Hugging Face ``transformers`` loads; a README.md model card either way, and optionally a Hub upload."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from attnfit.errors import AttnfitError, ConfigError, check_choice, disk_is_full
from attnfit.model_card import write_model_card
from attnfit.options import check_option_types, output_dir
from attnfit.pretrained import export, load_artifact, load_pretrained
from attnfit.tasks import get_task

FORMATS = ("attnfit", "transformers")


def export_model(cfg: DictConfig) -> Path:
    if not cfg.get("checkpoint"):
        raise ConfigError("checkpoint=PATH is required: a run directory, a .ckpt file or an exported model")
    if not cfg.get("out"):
        raise ConfigError("out=DIR is required: where the exported model goes")
    check_option_types(cfg)
    fmt = str(cfg.get("format") or "attnfit")
    check_choice("format", fmt, FORMATS)
    repo_id = str(cfg.get("push_to_hub") or "") or None
    if repo_id:
        from attnfit.hf import check_repo_id

        check_repo_id(repo_id)
    if (Path(str(cfg.out)) / "checkpoints").is_dir():  # its config.json would make the run read as an export
        raise ConfigError(
            f"out={cfg.out} is a run directory; export into a directory of its own, e.g. {cfg.out}/export"
        )
    out = output_dir(cfg.out, "out")
    artifact = load_artifact(cfg.checkpoint, cfg.get("weights"))
    if fmt == "transformers":
        from attnfit.hf import transformers_target

        transformers_target(artifact.record)  # an architecture that does not map stops before anything is written
    try:
        if fmt == "transformers":
            from attnfit.hf import export_transformers

            export_transformers(artifact, out, merge_lora=bool(cfg.merge_lora))
        else:
            export(artifact, out, merge_lora=bool(cfg.merge_lora))
    except Exception as error:  # safetensors reports a full disk as its own error
        if not disk_is_full(out, error):
            raise
        raise AttnfitError(f"cannot write the export into out={out}: the disk is full; free some space") from None
    load_pretrained(out)  # proves the directory loads on its own (a transformers export: through the import)
    write_model_card(artifact.record, artifact.run_dir(), out, fmt, repo_id)
    print(f"exported {artifact.task} model from {artifact.source} to {out}:")
    for path in sorted(out.iterdir()):
        print(f"  {path.name:22s} {path.stat().st_size / 1e6:8.2f} MB")
    if fmt == "transformers":
        print(f"load it with: transformers.AutoModel….from_pretrained({str(out)!r}), AutoTokenizer the same way")
    print(f"load it with: model, tokenizer = attnfit.load_pretrained({str(out)!r})")
    print(f"predict:      attnfit-predict checkpoint={out} text='...' heatmap=true")
    if get_task(artifact.task).is_pretraining:
        print(f"fine-tune it: attnfit-finetune pretrained={out}")
    if repo_id:
        from attnfit.hf import push_to_hub

        print(f"pushed to the Hugging Face Hub: {push_to_hub(out, repo_id)}")
    return out
