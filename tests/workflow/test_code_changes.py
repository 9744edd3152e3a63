"""A change of the library reruns the rules whose code changed, and only them (params `code`, lokiml/codedigest.py).

On a copy of the extended tiny run (extended_tiny.py: the tiny run with a descriptors experiment).
"""

import shutil

import pytest

from extended_tiny import CONFIG, extended_tiny_run
from test_workflow import jobs_to_run

pytestmark = pytest.mark.workflow


@pytest.fixture(scope="module")
def with_descriptors(project_root, tmp_path_factory):
    wd = extended_tiny_run(project_root, tmp_path_factory)
    assert jobs_to_run(wd, *CONFIG) == {}
    return wd


def _edit(path, old, new):
    src = path.read_text()
    assert old in src, (path, old)
    path.write_text(src.replace(old, new, 1))


def test_a_change_in_images_py_reruns_normalisation_not_the_descriptor_baseline(with_descriptors, tmp_path):
    copy = tmp_path / "wd"
    shutil.copytree(with_descriptors, copy, symlinks=True)
    # the crop of images.normalise: what normalisation runs, not what reading the export runs
    _edit(copy / "workflow" / "scripts" / "lokiml" / "images.py", "def normalise(", "def normalise(  # noqa\n")
    assert jobs_to_run(copy, *CONFIG) == {}, "a comment is no change of code"
    path = copy / "workflow" / "scripts" / "lokiml" / "images.py"
    src = path.read_text()
    i = src.index("def normalise(")
    j = src.index("\n    return ", i)
    path.write_text(src[:j] + "\n    _changed = True" + src[j:])
    counts = jobs_to_run(copy, *CONFIG)
    assert counts.get("normalise_images") == 2, counts
    assert "train_model" in counts and "evaluate_model" in counts, counts  # downstream of the new images
    # morphometrics measure the exported images (decoder and polarity), not the normalised ones
    for rule in ("make_demo_export", "read_export", "balance_classes", "split_dataset", "compute_morphometrics",
                 "train_descriptors", "estimate_descriptors"):
        assert rule not in counts, (rule, counts)
    # the descriptor baseline is not refitted; its evaluation is redone only for the images of its mistakes
    assert counts.get("evaluate_descriptors") == 1 and counts.get("plot_class_gallery") == 1, counts


def test_a_change_in_descriptors_py_reruns_only_the_descriptor_baseline(with_descriptors, tmp_path):
    copy = tmp_path / "wd"
    shutil.copytree(with_descriptors, copy, symlinks=True)
    path = copy / "workflow" / "scripts" / "lokiml" / "descriptors.py"
    src = path.read_text()
    i = src.index("def train_descriptors(")
    j = src.index('"""', src.index('"""', i) + 3) + 3  # after its docstring
    path.write_text(src[:j] + "\n    _changed = True" + src[j:])
    counts = jobs_to_run(copy, *CONFIG)
    # downstream of its model: its evaluation, the leaderboard, its decisions and its prediction record
    assert set(counts) - {"all"} == {"train_descriptors", "estimate_descriptors", "evaluate_descriptors",
                                     "make_leaderboard", "compare_classes", "evaluate_decisions",
                                     "record_normalisation"}, counts
