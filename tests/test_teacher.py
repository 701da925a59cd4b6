"""The rules teacher's item scores and soft SID targets, by hand on a four-item catalog."""

import numpy as np
import pytest
import scipy.sparse as sp

from indexer.cooccurrence import normalise_rows, transitions
from indexer.training.teacher import RulesTeacher, RulesTeacherConfig, code_targets

SEQS = [np.array(s) for s in ([0, 1], [0, 1], [0, 2], [3, 0])]
# local ids of a 7-wide SID range: first codes 0-2, second 3-4, third 5, <sid_end> 6. Items 1 and
# 2 share first code 1 and part at the second; item 3's SID is one code longer.
END = 6
CODES = np.array([[0, 3, END, -1], [1, 3, END, -1], [1, 4, END, -1], [2, 3, 5, END]])


def test_transitions_count_followers_within_the_window_and_the_reverse_pairs():
    C = transitions(SEQS + [np.array([1, 2, 3])], 4, window=2, decay=0.5, reverse=0.25).toarray()
    assert C[0, 1] == 2 and C[0, 2] == 1 and C[3, 0] == 1
    assert C[1, 3] == 0.5  # two steps on: decay once
    assert C[1, 0] == 0.5 and C[2, 0] == 0.25  # the pairs the other way round, times reverse
    assert transitions([np.array([4])], 5, 3, 1.0, 0.0).nnz == 0  # nothing to pair
    rows = normalise_rows(transitions(SEQS, 4, 1, 1.0, 0.0), 1.0).toarray()
    assert rows[0].tolist() == pytest.approx([0, 2 / 3, 1 / 3, 0])


def test_item_scores_follow_the_newest_item_and_leave_the_prefix_out():
    cfg = RulesTeacherConfig(window=1, decay=1.0, reverse=1.0, last=1, recency=1.0, beta=0.0)
    teacher = RulesTeacher(SEQS, 4, cfg)
    # one row: <item> markers at 1 and 3 carry items 0 and then 2; both predict a target
    content = np.array([[-1, 0, -1, 2, -1]])
    first = np.array([[False, True, False, True, False]])
    scores = teacher.item_scores(content, first).toarray()
    # after item 0: item 1 followed it twice, item 2 once, item 3 came before it once (reverse 1)
    assert scores[0].tolist() == pytest.approx([0, 2, 1, 1])
    # after 0 then 2: item 2's only partner is 0, which the user already has
    assert scores[1].sum() == 0


def test_targets_sum_the_scores_per_code_under_the_gold_prefix():
    scores = sp.csr_matrix(np.array([[0, 2, 1, 1], [0, 2, 1, 1]], dtype=np.float64))
    gold = np.array([1, 0])  # the first position's target is item 1, the second's item 0
    goal, has = code_targets(scores, gold, CODES, 7, 0)
    assert goal.shape == (2, 7) and has.tolist() == [True, True]
    assert goal[0].tolist() == pytest.approx([0, 3 / 4, 1 / 4, 0, 0, 0, 0])  # items 1 and 2 share code 1
    goal, has = code_targets(scores, gold, CODES, 7, 1)
    # under item 1's prefix (code 1): items 1 and 2, parting at codes 3 and 4; nothing scored starts with item 0's code 0
    assert has.tolist() == [True, False] and goal[0].tolist() == pytest.approx([0, 0, 0, 2 / 3, 1 / 3, 0, 0])
    goal, has = code_targets(scores, gold, CODES, 7, 2)
    assert has.tolist() == [True, False] and goal[0].tolist() == pytest.approx([0, 0, 0, 0, 0, 0, 1])  # item 1's SID ends
    # item 1's SID has ended before level 3, though item 3's reaches it
    assert code_targets(scores, gold, CODES, 7, 3)[1].tolist() == [False, False]


def test_item_scores_take_the_rows_own_later_pairs_out_of_the_counts():
    cfg = RulesTeacherConfig(window=1, decay=1.0, reverse=1.0, last=1, recency=1.0, beta=1.0)
    teacher = RulesTeacher(SEQS, 4, cfg)
    # the row is SEQS[0] itself: item 0, then item 1
    content = np.array([[-1, 0, -1, 1, -1]])
    first = np.array([[False, True, False, True, False]])
    # item 0's row: 1 followed it twice, 2 once, 3 came before it once; total 4 (beta 1)
    assert teacher.item_scores(content, first).toarray()[0].tolist() == pytest.approx([0, 2 / 4, 1 / 4, 1 / 4])
    scores = teacher.item_scores(content, first, own_future=True).toarray()
    # this row's own 0 -> 1 pair is one of the two
    assert scores[0].tolist() == pytest.approx([0, 1 / 4, 1 / 4, 1 / 4])
    # after 0 then 1: item 1's only partner is 0, which the row already has
    assert scores[1].sum() == 0
