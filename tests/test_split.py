import numpy as np

from indexer.split import SplitConfig, head_mask


def test_split_by_interactions_and_items():
    pop = np.array([1, 50, 0, 30, 10, 9])  # total 100
    assert head_mask(pop, SplitConfig(by="interactions", head_share=0.8)).tolist() == [False, True, False, True, False, False]
    assert head_mask(pop, SplitConfig(by="interactions", head_share=0.81)).tolist() == [False, True, False, True, True, False]
    assert head_mask(pop, SplitConfig(by="items", head_share=0.5)).tolist() == [False, True, False, True, True, False]
    # Zero-popularity items are never head; no popularity at all makes everything head.
    assert not head_mask(pop, SplitConfig(by="items", head_share=1.0))[2]
    assert head_mask(np.zeros(3)).all()
