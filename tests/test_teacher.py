"""The rules teacher's soft first-code targets, by hand on a four-item catalog."""

import numpy as np
import pytest

from indexer.cooccurrence import normalise_rows, transitions
from indexer.training.teacher import RulesTeacher, RulesTeacherConfig

SEQS = [np.array(s) for s in ([0, 1], [0, 1], [0, 2], [3, 0])]


def test_transitions_count_followers_within_the_window_and_the_reverse_pairs():
    C = transitions(SEQS + [np.array([1, 2, 3])], 4, window=2, decay=0.5, reverse=0.25).toarray()
    assert C[0, 1] == 2 and C[0, 2] == 1 and C[3, 0] == 1
    assert C[1, 3] == 0.5  # two steps on: decay once
    assert C[1, 0] == 0.5 and C[2, 0] == 0.25  # the pairs the other way round, times reverse
    assert transitions([np.array([4])], 5, 3, 1.0, 0.0).nnz == 0  # nothing to pair
    rows = normalise_rows(transitions(SEQS, 4, 1, 1.0, 0.0), 1.0).toarray()
    assert rows[0].tolist() == pytest.approx([0, 2 / 3, 1 / 3, 0])


def test_the_teacher_spreads_the_rules_scores_over_first_codes_and_leaves_the_prefix_out():
    # items 1 and 2 share first code 1; item 3 has code 2, item 0 code 0 (local ids of a 4-wide range)
    cfg = RulesTeacherConfig(window=1, decay=1.0, reverse=1.0, last=1, recency=1.0, beta=0.0)
    teacher = RulesTeacher(SEQS, np.array([0, 1, 1, 2]), 4, cfg)
    # one row: <item> markers at 1 and 3 carry items 0 and then 3; both predict a first code
    content = np.array([[-1, 0, -1, 3, -1]])
    first = np.array([[False, True, False, True, False]])
    goal, has = teacher.targets(content, first)
    assert goal.shape == (2, 4) and has.tolist() == [True, False]
    # after item 0: items 1 (twice) and 2 followed it, item 3 came before it once (reverse 1)
    assert goal[0].tolist() == pytest.approx([0, 3 / 4, 1 / 4, 0])
    # after 0 then 3: item 3's only partner is 0, which the user already has, so no target
    assert goal[1].sum() == 0


def test_item_scores_take_the_rows_own_later_pairs_out_of_the_counts():
    cfg = RulesTeacherConfig(window=1, decay=1.0, reverse=1.0, last=1, recency=1.0, beta=1.0)
    teacher = RulesTeacher(SEQS, np.array([0, 1, 1, 2]), 4, cfg)
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
