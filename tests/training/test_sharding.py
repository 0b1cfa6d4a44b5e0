"""trainer=fsdp: one FSDP unit per transformer block, bf16 policy, sharded checkpoints read back as one file.

Lightning's FSDP (torch's FSDP1) refuses a CPU-only machine ("FSDP needs a non-CPU accelerator device"), so the
equivalence test shards with torch's FSDP2 (``fully_shard``) over two gloo processes, with the same per-block
policy (:func:`attnfit.training.sharding.shard_blocks`)."""

from __future__ import annotations

import socket
import warnings

import torch
import torch.nn.functional as F

from attnfit.models import LanguageModel, ModelConfig

CONFIG = {
    "vocab_size": 40,
    "dim": 16,
    "max_len": 12,
    "causal": True,
    "encoder": {"num_layers": 2},
    "attention": {"num_heads": 2},
}


def _model() -> LanguageModel:
    torch.manual_seed(0)
    return LanguageModel(ModelConfig.from_dict(CONFIG))


def _batches() -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    return [torch.randint(1, 40, (4, 12), generator=generator) for _ in range(3)]


def _train(model: torch.nn.Module, batches: list[torch.Tensor]) -> list[float]:
    """SGD on the mean next-token loss; the model's forward (FSDP2 gathers a unit's weights in its hooks)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    losses = []
    for ids in batches:
        logits = model(ids)
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, 40), ids[:, 1:].reshape(-1))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(float(loss))
    return losses


def _sharded_rank(rank: int, world: int, port: int, out: str) -> None:
    import os

    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    from attnfit.training.sharding import shard_blocks

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        warnings.simplefilter("ignore")  # FSDP2 warns that the root returns a view; nothing here writes into it
        model = shard_blocks(_model(), init_device_mesh("cpu", (world,)))
        local = next(p for p in model.parameters() if p.dim() == 2)
        shard = (tuple(local.to_local().shape), tuple(local.shape))
        mine = [ids[rank::world] for ids in _batches()]  # this rank's half of each global batch
        _train(model, mine)
        full = {name: p.full_tensor() for name, p in model.named_parameters()}  # gathered on every rank
        if rank == 0:
            torch.save({"state": full, "shard": shard}, out)
    finally:
        dist.destroy_process_group()


def test_sharding_each_block_over_two_processes_matches_one_process(tmp_path):
    import torch.multiprocessing as mp

    single = _model()
    _train(single, _batches())
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "sharded.pt"
    mp.start_processes(_sharded_rank, args=(2, port, str(out)), nprocs=2, start_method="fork")
    result = torch.load(out, weights_only=True)
    local, whole = result["shard"]
    assert local[0] * 2 == whole[0]  # each rank held half of the rows
    state = dict(single.named_parameters())
    assert set(result["state"]) == set(state)
    for name, value in result["state"].items():
        torch.testing.assert_close(value, state[name].detach(), rtol=1e-5, atol=1e-6, msg=name)


def test_the_fsdp_strategy_wraps_each_block_with_a_bf16_policy():
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy

    from attnfit.models.encoders.layers import TransformerLayer
    from attnfit.models.seq2seq.decoders import DecoderLayer
    from attnfit.training.sharding import fsdp_strategy

    strategy = fsdp_strategy({"state_dict_type": "sharded"}, "bf16-mixed")
    policy = strategy.kwargs["auto_wrap_policy"]
    assert isinstance(policy, ModuleWrapPolicy) and set(policy._module_classes) == {TransformerLayer, DecoderLayer}
    mp = strategy.mixed_precision
    assert (mp.param_dtype, mp.reduce_dtype) == (torch.bfloat16, torch.float32)
    assert strategy._state_dict_type == "sharded"
    assert fsdp_strategy({"mixed_precision": False}, "bf16-mixed").mixed_precision is None
    assert fsdp_strategy({}, "32-true").mixed_precision is None


def test_a_sharded_checkpoint_reads_back_as_one(tmp_path):
    """The layout Lightning's FSDPStrategy writes with state_dict_type=sharded: torch.distributed.checkpoint
    shards of ``model`` and ``optimizer_0`` plus ``meta.pt``; load_artifact (eval, export, resume) reads it whole."""
    import torch.distributed.checkpoint as dcp
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel

    from attnfit.pretrained import CHECKPOINT_KEY, ModelRecord, load_artifact

    model = _model()
    tokenizer = Tokenizer(WordLevel({f"t{i}": i for i in range(40)}, unk_token="t1")).to_str()
    record = ModelRecord(task="clm", model_config=model.config.to_dict(), tokenizer_json=tokenizer)
    path = tmp_path / "checkpoints" / "last.ckpt"
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    dcp.save({"model": state}, checkpoint_id=path, no_dist=True)
    torch.save({CHECKPOINT_KEY: record.to_dict(), "global_step": 3}, path / "meta.pt")
    for source in (path, tmp_path):  # the checkpoint, or its run directory
        artifact = load_artifact(source)
        assert artifact.source == path and artifact.record.task == "clm"
        assert set(artifact.state_dict) == set(model.state_dict())
        for key, value in model.state_dict().items():
            torch.testing.assert_close(artifact.state_dict[key], value, msg=key)
    # Exported: one model.safetensors that loads on its own.
    from attnfit.pretrained import export, load_pretrained

    out = export(load_artifact(path), tmp_path / "export")
    assert [p.name for p in out.glob("*.safetensors")] == ["model.safetensors"]
    loaded, _ = load_pretrained(out)
    ids = torch.randint(1, 40, (2, 12))
    torch.testing.assert_close(loaded.eval()(ids), model.eval()(ids))
