import numpy as np
import pandas as pd
import pytest

from lokiml.balance import apportion, balance
from lokiml.errors import InputError
from lokiml.split import split_items


def make_objects(counts, start_day=1):
    rows = []
    for cls, n in counts.items():
        for i in range(n):
            day = start_day + i * 30 // max(n, 1)
            rows.append({
                "object_id": f"{cls}_{i:05d}", "class_name": cls, "image_ref": f"img/{cls}_{i}.jpg",
                "object_date": f"202001{day:02d}", "object_time": f"{(i * 7) % 24:02d}{i % 60:02d}00",
                "sample_id": f"s{i % 6}", "object_cruise": "PS122" if i % 5 == 0 else "PS121",
            })
    return pd.DataFrame(rows)


def test_apportion_gives_each_stratum_floor_or_ceil_of_its_share():
    counts = np.array([7, 1, 30, 2, 60])
    q = apportion(counts, 33)
    exact = counts * 33 / counts.sum()
    assert q.sum() == 33 and (q >= np.floor(exact)).all() and (q <= np.ceil(exact)).all() and (q <= counts).all()
    assert apportion(np.array([5, 5]), 10).tolist() == [5, 5]


def test_large_class_is_capped_over_its_whole_time_range():
    objs = make_objects({"big": 150, "small": 20})
    # shuffle rows: the order of the export must not matter
    objs = objs.sample(frac=1, random_state=0)
    out = balance(objs, ["big", "small"], cap=100, seed=1)
    big = out[out["class_name"] == "big"]
    assert len(big) == 100 and big["augmented"].eq(0).all() and big["object_id"].is_unique
    kept = objs.set_index("object_id").loc[big["object_id"]]
    all_big = objs[objs.class_name == "big"]
    # every day keeps its share to within one object: the seed kept only the earliest 100 of 150
    per_day = kept["object_date"].value_counts().reindex(all_big["object_date"].unique(), fill_value=0)
    share = all_big["object_date"].value_counts() * 100 / 150
    assert ((per_day - share.loc[per_day.index]).abs() < 1).all()
    assert kept["object_date"].max() == all_big["object_date"].max()


@pytest.mark.parametrize("where", ["spread over the cruise", "a new leg on later days"])
def test_appending_new_objects_changes_the_capped_selection_only_by_their_share(where):
    old = make_objects({"big": 3000})
    if where == "a new leg on later days":
        new = make_objects({"big": 30}, start_day=31)
        new["object_date"] = new["object_date"].str.replace("202001", "202002")
    else:
        new = make_objects({"big": 30})
    new["object_id"] = [f"new_{i:05d}" for i in range(len(new))]
    first = balance(old, ["big"], cap=1000, seed=1, augment=False)
    second = balance(pd.concat([old, new]), ["big"], cap=1000, seed=1, augment=False)
    changed = len(set(second["object_id"]) - set(first["object_id"]))
    # 1 % more objects: about 1 % of the selection changes (spreading every n-th over the
    # new range would have replaced most of it, and renormalised most images)
    assert changed <= 30, changed
    assert len(second) == 1000


def test_small_class_is_filled_with_augmented_copies_that_name_their_original():
    objs = make_objects({"big": 150, "small": 20})
    out = balance(objs, ["big", "small"], cap=100, seed=1)
    small = out[out["class_name"] == "small"]
    assert len(small) == 100
    orig = small[small["augmented"] == 0]
    aug = small[small["augmented"] == 1]
    assert len(orig) == 20 and len(aug) == 80
    assert set(aug["object_id"]) <= set(orig["object_id"])
    assert aug["object_id"].value_counts().between(4, 4).all()  # 80 copies over 20 originals: 4 each
    assert aug["item_id"].is_unique and not set(aug["item_id"]) & set(orig["item_id"])
    assert aug["angle"].abs().max() <= 180 and aug["dx"].abs().max() <= 0.1
    assert (aug["image_ref"].to_numpy() == orig.set_index("object_id").loc[aug["object_id"], "image_ref"].to_numpy()).all()


def test_balance_same_seed_same_result_other_seed_differs():
    objs = make_objects({"a": 30, "b": 10})
    a = balance(objs, ["a", "b"], cap=25, seed=7)
    b = balance(objs.sample(frac=1, random_state=3), ["a", "b"], cap=25, seed=7)
    c = balance(objs, ["a", "b"], cap=25, seed=8)
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(c)


def test_augmentation_off_keeps_small_classes_as_they_are():
    objs = make_objects({"a": 30, "b": 10})
    out = balance(objs, ["a", "b"], cap=25, augment=False)
    assert out.groupby("class_name").size().to_dict() == {"a": 25, "b": 10}


def test_empty_class_is_a_clear_error():
    with pytest.raises(InputError, match="'ghost' has no usable objects"):
        balance(make_objects({"a": 5}), ["a", "ghost"], cap=10)


def _split(objs, classes, cap=40, **kw):
    bal = balance(objs, classes, cap=cap, seed=1)
    return split_items(bal, objs, **kw)


def test_split_fractions_per_class_and_copies_follow_their_original():
    objs = make_objects({"big": 150, "small": 20})
    out = _split(objs, ["big", "small"], cap=100, seed=3)
    orig = out[out.augmented == 0]
    for cls, n in [("big", 100), ("small", 20)]:
        counts = orig[orig.class_name == cls]["split"].value_counts().to_dict()
        assert counts == {"train": int(n * 0.6), "valid": int(n * 0.2), "test": int(n * 0.2)}
    # no object in two splits: all its items share one split
    assert out.groupby("object_id")["split"].nunique().max() == 1


def test_split_seed_changes_assignment_and_is_reproducible():
    objs = make_objects({"a": 50, "b": 50})
    a = _split(objs, ["a", "b"], seed=3)
    b = _split(objs, ["a", "b"], seed=3)
    c = _split(objs, ["a", "b"], seed=4)
    pd.testing.assert_frame_equal(a, b)
    assert not a["split"].equals(c["split"])


# Classes of 0, 1 and 2 objects: tests/unit/test_bad_input_matrix.py


@pytest.mark.parametrize("n", [3, 4, 5])
def test_classes_of_three_to_five_objects_still_reach_every_split(n):
    objs = make_objects({"a": 50, "few": n})
    out = _split(objs, ["a", "few"])
    assert set(out[out.class_name == "few"]["split"]) == {"train", "valid", "test"}


def test_group_split_keeps_each_group_in_one_split():
    objs = make_objects({"a": 120, "b": 90})
    out = _split(objs, ["a", "b"], cap=200, group_by="sample_id")
    groups = objs.set_index("object_id").loc[out["object_id"], "sample_id"].to_numpy()
    per_group = pd.DataFrame({"g": groups, "s": out["split"].to_numpy()}).groupby("g")["s"].nunique()
    assert per_group.max() == 1
    assert set(out["split"]) == {"train", "valid", "test"}


def test_holdout_sends_one_cruise_to_test():
    objs = make_objects({"a": 100, "b": 60})
    out = _split(objs, ["a", "b"], cap=200, holdout={"column": "object_cruise", "values": ["PS122"]})
    cruise = objs.set_index("object_id").loc[out["object_id"], "object_cruise"].to_numpy()
    assert (out["split"].to_numpy()[cruise == "PS122"] == "test").all()
    assert set(out["split"].to_numpy()[cruise != "PS122"]) == {"train", "valid"}


def test_unknown_group_column_is_named():
    objs = make_objects({"a": 50, "b": 50})
    with pytest.raises(InputError, match="haul"):
        _split(objs, ["a", "b"], group_by="haul")
