"""Repeated k-fold and leave-one-group-out estimates: folds, no leakage, honest on random labels, groups."""

import json

import numpy as np
import pandas as pd
import pytest

from lokiml import descriptors as d
from lokiml import estimates as es
from lokiml.io import write_tsv
from test_descriptors import CLASSES, FAST_RF, synthetic


def test_kfold_partitions_the_testable_objects_every_repeat():
    y = np.repeat([0, 1, 2], [30, 20, 10])
    testable = np.ones(len(y), bool)
    testable[:12] = False  # e.g. objects a CNN trained on: never tested
    plan = es.fold_plan(y, folds=5, repeats=3, seed=4, testable=testable)
    assert [f.scheme for f in plan] == ["kfold"] * 15
    for r in range(3):
        tests = np.concatenate([f.test for f in plan if f.repeat == r])
        assert sorted(tests) == list(range(12, 60))  # each testable object once per repeat
        for f in plan:
            if f.repeat == r:  # stratified: every class in every fold
                assert set(y[f.test]) == {0, 1, 2}
    # repeats are different shuffles; the same seed gives the same folds
    assert not np.array_equal(plan[0].test, plan[5].test)
    again = es.fold_plan(y, folds=5, repeats=3, seed=4, testable=testable)
    assert all(np.array_equal(a.test, b.test) for a, b in zip(plan, again))


def test_groups_are_left_out_one_at_a_time_or_in_group_folds():
    y = np.tile([0, 1], 30)
    groups = np.repeat(["h1", "h2", "h3"], 20)
    plan = [f for f in es.fold_plan(y, 5, 1, 1, groups=groups) if f.scheme == "logo"]
    assert [f.group for f in plan] == ["h1", "h2", "h3"] and all(f.n_groups == 1 for f in plan)
    for f in plan:
        assert set(groups[f.test]) == {f.group} and len(f.test) == 20
    many = np.array([f"s{i:02d}" for i in range(60)])
    plan = [f for f in es.fold_plan(y, 5, 1, 1, groups=many, max_group_folds=4) if f.scheme == "logo"]
    assert len(plan) == 4 and sum(f.n_groups for f in plan) == 60
    assert sorted(np.concatenate([f.test for f in plan])) == list(range(60))
    # one group only: no group estimate, said in the log
    assert not [f for f in es.fold_plan(y, 5, 1, 1, groups=np.full(60, "h1")) if f.scheme == "logo"]


def test_inner_split_is_stratified_and_inside_the_pool():
    y = np.repeat([0, 1, 2, 3], [40, 10, 2, 1])
    pool = np.arange(len(y))[::1]
    train, valid = es.inner_split(y, pool, 0.25, seed=0)
    assert sorted(np.concatenate([train, valid])) == sorted(pool) and not set(train) & set(valid)
    counts = pd.Series(y[valid]).value_counts().to_dict()
    assert counts == {0: 10, 1: 2, 2: 1}  # a class of 1 stays in train, a class of 2 gives one
    only = np.zeros(len(y), bool)
    only[20:] = True
    _, valid2 = es.inner_split(y, pool, 0.25, seed=0, validatable=only)
    assert valid2.min() >= 20


def test_the_learner_never_sees_a_fold_s_test_objects():
    y = np.tile([0, 1, 2], 20)
    groups = np.repeat(["a", "b", "c", "d"], 15)
    plan = es.fold_plan(y, 4, 2, 1, groups=groups)
    seen = []

    def learner(train, valid, pool):
        seen.append((set(train), set(valid), set(pool)))

        def predict(test):
            # the test objects are exactly the fold's, and none was given to the learner
            assert not set(test) & seen[-1][2]
            out = np.zeros((len(test), 3))
            out[np.arange(len(test)), y[test]] = 1  # a perfect oracle, to check the bookkeeping
            return out
        return predict, {"p": 1}

    est = es.run_estimate(y, 3, plan, learner, 0.25, seed=1)
    assert len(seen) == len(plan) == 8 + 4
    for (tr, va, pool), f in zip(seen, plan):
        assert tr | va <= pool and not tr & va and pool == set(range(60)) - set(f.test)
    s = est.summary
    assert s["kfold"]["macro_f1_mean"] == 1.0 and s["kfold"]["folds"] == 8 and s["kfold"]["repeats"] == 2
    assert s["logo"]["groups"] == ["a", "b", "c", "d"] and s["logo"]["method"] == "leave one group out"
    assert s["kfold"]["n_objects"] == 60 and set(est.table["chosen_params"]) == {'{"p": 1}'}


def test_estimate_learns_and_is_at_chance_on_shuffled_labels(tmp_path):
    """An honest estimate: high where the descriptors carry the class, chance where the labels are random."""
    objects, split = synthetic(n=180, seed=12)
    write_tsv(tmp_path / "objects.tsv", objects)
    params = {"kind": "descriptors", **FAST_RF, "features": "export", "estimate": {"folds": 3, "repeats": 2}}
    results = {}
    for name, table in (("real", split), ("shuffled", split.assign(
            class_name=np.random.default_rng(0).permutation(split["class_name"].to_numpy())))):
        write_tsv(tmp_path / "split.tsv", table)
        exp = tmp_path / name
        d.train_descriptors(tmp_path / "objects.tsv", tmp_path / "split.tsv", CLASSES, params, exp / "model.pkl",
                            exp / "classes.txt", exp / "columns.tsv", exp / "grid.tsv", exp / "info.json")
        results[name] = d.estimate_descriptors(tmp_path / "objects.tsv", tmp_path / "split.tsv", exp / "columns.tsv",
                                               CLASSES, params, exp / "estimate.tsv", exp / "estimate.json",
                                               split={"train": 0.6, "valid": 0.2, "group_by": "object_haul"})
    real, shuffled = results["real"], results["shuffled"]
    assert real["kfold"]["macro_f1_mean"] > 0.85 and shuffled["kfold"]["macro_f1_mean"] < 0.5
    assert real["kfold"]["folds"] == 6 and real["kfold"]["macro_f1_sd"] >= 0
    # object_haul follows the class here: left out of the columns, it is the group of the estimate; with a
    # class only in its own haul, a new haul holds a class the model never saw: macro F1 far below k-fold
    assert real["logo"]["folds"] == 3 and real["group_by"] == "object_haul"
    assert real["logo"]["macro_f1_mean"] < real["kfold"]["macro_f1_mean"] - 0.3
    table = pd.read_csv(tmp_path / "real" / "estimate.tsv", sep="\t")
    assert (table.loc[table["scheme"] == "logo", "classes_unseen"] == 1).all()
    on_disk = json.loads((tmp_path / "real" / "estimate.json").read_text())
    assert on_disk["kfold"] == pytest.approx(real["kfold"]) and "seconds" not in on_disk
    lines = dict(es.summary_lines(on_disk))
    assert "Repeated estimate" in lines and "New object_haul" in lines
    assert f"{real['kfold']['macro_f1_mean']:.3f} ± " in lines["Repeated estimate"]
