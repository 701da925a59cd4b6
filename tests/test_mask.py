"""The decode mask: exactly the valid continuations, on both kernels, for variable-length SIDs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sidcore.decoder.vocab import SIDVocab
from sidcore.errors import DataError
from sidcore.index import FINISHED, INVALID, Trie, TrieMask

BACKENDS = ["numpy", "torch"]
# dense_min=1 gives every node a precomputed mask row, 3 a mix, 10**6 none: all paths of ``allowed``.
DENSE_MIN = [1, 3, 10**6]


def build(sids, sizes) -> Trie:
    codes = np.zeros((len(sids), len(sizes)), dtype=np.int64)
    for i, sid in enumerate(sids):
        codes[i, : len(sid)] = sid
    return Trie.from_items([f"i{i}" for i in range(len(sids))], codes, [len(s) for s in sids], sizes)


def test_vocab_layout():
    v = SIDVocab((3, 4, 6), base=100)
    assert v.offsets == (0, 3, 7) and v.num_local == 14 and v.end_local == 13 and v.end_token == 113
    assert v.token(0, 0) == 100 and v.token(1, 2) == 105 and v.token(2, 5) == 112
    assert v.token_strings()[:4] == ["<s1_0>", "<s1_1>", "<s1_2>", "<s2_0>"]
    assert v.token_strings()[-2:] == ["<s3_5>", "<sid_end>"] and len(v.token_strings()) == v.num_local
    assert [v.layer_code(v.local(layer, c)) for layer, c in [(0, 2), (1, 0), (2, 5)]] == [(0, 2), (1, 0), (2, 5)]
    assert v.layer_code(v.end_local) is None
    assert v.sid_tokens((1, 2)) == [101, 105, 113]
    with pytest.raises(DataError):
        v.local(1, 4)
    with pytest.raises(DataError):
        v.layer_code(14)


@pytest.mark.parametrize("dense_min", DENSE_MIN)
@pytest.mark.parametrize("backend", BACKENDS)
def test_mask_on_variable_length_sids(backend, dense_min):
    """(1,2) is both a complete SID and a prefix of (1,2,3); (1,) likewise; (2,) and (2,0) are only prefixes."""
    trie = build([(1,), (1, 2), (1, 2, 3), (2, 0, 5)], (3, 4, 6))
    vocab = SIDVocab((3, 4, 6), base=50)
    mask = TrieMask(trie, vocab, backend=backend, dense_min=dense_min)
    end = None
    expected = {
        (): {(0, 1), (0, 2)},
        (1,): {(1, 2), end},
        (1, 2): {(2, 3), end},
        (1, 2, 3): {end},
        (2,): {(1, 0)},
        (2, 0): {(2, 5)},
        (2, 0, 5): {end},
    }
    nodes = torch.tensor([trie.node_of(s) for s in expected])
    rows = mask.allowed(nodes)
    assert rows.shape == (len(expected), 14) and rows.dtype == torch.bool
    for row, allowed in zip(rows, expected.values()):
        assert {vocab.layer_code(int(i)) for i in torch.nonzero(row).flatten()} == allowed

    n = trie.node_of
    cases = [
        (n(()), vocab.local(0, 1), n((1,))),
        (n((1,)), vocab.end_local, FINISHED),
        (n((1,)), vocab.local(1, 2), n((1, 2))),
        (n((1, 2)), vocab.local(2, 3), n((1, 2, 3))),
        (n((1, 2)), vocab.end_local, FINISHED),
        (n((2,)), vocab.end_local, INVALID),  # not terminal
        (n((2,)), vocab.local(1, 1), INVALID),  # no such child
        (n((2,)), vocab.local(2, 0), INVALID),  # right code, wrong layer
        (n(()), vocab.local(1, 0), INVALID),
        (n((2, 0)), vocab.local(2, 5), n((2, 0, 5))),
        (n((1, 2, 3)), vocab.local(2, 3), INVALID),
    ]
    nodes, tokens, want = (torch.tensor(c) for c in zip(*cases))
    assert mask.step(nodes, tokens).tolist() == want.tolist()
    assert mask.root == 0 and mask.sid(n((1, 2))) == (1, 2) and mask.items(n((1, 2))) == ["i1"]
    assert mask.allowed(torch.zeros(0, dtype=torch.long)).shape == (0, 14)


def test_mask_refuses_a_mismatched_vocabulary():
    with pytest.raises(DataError, match="sizes"):
        TrieMask(build([(1,)], (3, 4)), SIDVocab((3, 5)))


@pytest.mark.parametrize("dense_min", DENSE_MIN)
@pytest.mark.parametrize("backend", BACKENDS)
def test_batched_mask_equals_the_trie_everywhere(artifact, backend, dense_min):
    trie = Trie.from_artifact(artifact).insert([("late", (1,)), ("later", (15, 31, 63))])
    vocab = SIDVocab(trie.sizes, base=7)
    mask = TrieMask(trie, vocab, backend=backend, dense_min=dense_min)
    nodes = torch.arange(trie.num_nodes)
    rows = mask.allowed(nodes)
    for node in range(trie.num_nodes):
        kids = trie.child_code[trie.child_start[node] : trie.child_start[node + 1]]
        want = {vocab.local(int(trie.depth[node]), int(c)) for c in kids} | ({vocab.end_local} if trie.terminal[node] else set())
        assert set(torch.nonzero(rows[node]).flatten().tolist()) == want
    chosen = torch.multinomial(rows.float(), 1).flatten()  # one allowed token per node
    nxt = mask.step(nodes, chosen)
    for node, tok, child in zip(nodes.tolist(), chosen.tolist(), nxt.tolist()):
        lc = vocab.layer_code(tok)
        assert child == (FINISHED if lc is None else trie.child(node, lc[1]))


@st.composite
def indexes(draw):
    sizes = tuple(draw(st.lists(st.integers(1, 5), min_size=1, max_size=3)))
    sid = st.integers(1, len(sizes)).flatmap(lambda n: st.tuples(*(st.integers(0, sizes[i] - 1) for i in range(n))))
    return sizes, sorted(draw(st.sets(sid, min_size=1, max_size=25)))


@settings(max_examples=60, deadline=None)
@given(index=indexes(), backend=st.sampled_from(BACKENDS), dense_min=st.sampled_from(DENSE_MIN), data=st.data())
def test_random_walks_under_the_mask_only_produce_index_sids(index, backend, dense_min, data):
    sizes, sids = index
    trie = build(sids, sizes)
    vocab = SIDVocab(sizes)
    mask = TrieMask(trie, vocab, backend=backend, dense_min=dense_min)

    beams = 8
    nodes = torch.full((beams,), mask.root)
    path: list[list[int]] = [[] for _ in range(beams)]
    done: list[tuple[int, ...] | None] = [None] * beams
    for _ in range(len(sizes) + 1):
        rows = mask.allowed(nodes)
        assert rows.any(dim=1).all()  # every live beam can continue or end
        picks = [data.draw(st.sampled_from(torch.nonzero(r).flatten().tolist())) for r in rows]
        nxt = mask.step(nodes, torch.tensor(picks))
        assert (nxt != INVALID).all()
        for b, (tok, child) in enumerate(zip(picks, nxt.tolist())):
            if done[b] is None and child == FINISHED:
                done[b] = tuple(path[b])
            elif done[b] is None:
                path[b].append(vocab.layer_code(tok)[1])
                assert trie.sid_of(child) == tuple(path[b])
        live = [b for b in range(beams) if done[b] is None]
        if not live:
            break
        nodes = torch.where(nxt >= 0, nxt, mask.root)  # finished beams idle at the root
    assert all(d is not None for d in done)  # every walk ends within max depth + 1 steps
    assert set(done) <= set(sids)

    # ... and every SID of the index is reachable, token by token, then ends.
    for sid in sids:
        node = mask.root
        for layer, code in enumerate(sid):
            local = vocab.local(layer, code)
            assert mask.allowed(torch.tensor([node]))[0, local]
            node = int(mask.step(torch.tensor([node]), torch.tensor([local]))[0])
        assert mask.allowed(torch.tensor([node]))[0, vocab.end_local]
        assert int(mask.step(torch.tensor([node]), torch.tensor([vocab.end_local]))[0]) == FINISHED


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu(artifact):
    trie = Trie.from_artifact(artifact)
    vocab = SIDVocab(trie.sizes)
    cpu, gpu = TrieMask(trie, vocab), TrieMask(trie, vocab, device="cuda")
    nodes = torch.arange(trie.num_nodes)
    assert torch.equal(cpu.allowed(nodes), gpu.allowed(nodes.cuda()).cpu())
    tokens = torch.randint(0, vocab.num_local, (trie.num_nodes,))
    assert torch.equal(cpu.step(nodes, tokens), gpu.step(nodes.cuda(), tokens.cuda()).cpu())
