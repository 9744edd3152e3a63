"""lokiml.codedigest: a rule's `code` param changes when the library code its script runs changes, and only then."""

import shutil
import textwrap

import pytest

from lokiml.codedigest import Library


@pytest.fixture()
def scripts(project_root, tmp_path):
    """A copy of workflow/scripts (the rule scripts and the lokiml package) to edit."""
    dest = tmp_path / "scripts"
    shutil.copytree(project_root / "workflow" / "scripts", dest, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def digests(root, names=("read_export", "normalise_images", "train_descriptors", "evaluate_model", "train_model",
                         "predict_images")):
    lib = Library(root)
    return {n: lib.digest(root / f"{n}.py") for n in names}


def edit_function(path, name, line):
    """Append a statement to the body of function `name` (its first line after the signature)."""
    src = path.read_text()
    head = f"def {name}("
    i = src.index(head)
    j = src.index(":\n", src.index(")", i)) + 2
    # after the docstring, if any
    body = src[j:]
    indent = body[: len(body) - len(body.lstrip(" "))]
    stripped = body.lstrip(" ")
    if stripped.startswith('"""'):
        end = stripped.index('"""', 3) + 3
        k = j + len(indent) + end + 1
    else:
        k = j
    path.write_text(src[:k] + f"{indent}{line}\n" + src[k:])


def test_a_change_of_the_crop_reruns_normalisation_not_the_export_or_the_descriptors(scripts):
    before = digests(scripts)
    edit_function(scripts / "lokiml" / "images.py", "normalise", "_unused = 1")
    after = digests(scripts)
    assert after["normalise_images"] != before["normalise_images"]
    assert after["predict_images"] != before["predict_images"]  # prediction normalises the same way
    for name in ("read_export", "train_descriptors", "evaluate_model", "train_model"):
        assert after[name] == before[name], name


def test_a_change_of_the_decoder_reruns_the_export_reading_too(scripts):
    before = digests(scripts)
    edit_function(scripts / "lokiml" / "images.py", "decode_grey", "_unused = 1")
    after = digests(scripts)
    assert after["read_export"] != before["read_export"]  # it checks every image with the decoder
    assert after["normalise_images"] != before["normalise_images"]
    assert after["train_descriptors"] == before["train_descriptors"]


def test_comments_docstrings_and_formatting_change_nothing(scripts):
    before = digests(scripts)
    path = scripts / "lokiml" / "images.py"
    src = path.read_text()
    assert src.startswith('"""')
    src = '"""A new first line of the module docstring.\n' + src[3:]
    src = src.replace('    """', '    """A new first line of a function docstring.\n    ', 1)
    src = "# a new comment\n" + src.replace("\n\n\ndef ", "\n\n\n# another comment\ndef ")
    path.write_text(src)
    assert digests(scripts) == before


def test_a_change_reached_through_a_module_alias_counts(scripts):
    """store.py does `from . import images` and calls `images.normalise`: followed through the alias."""
    lib = Library(scripts)
    reached = lib.reached(scripts / "normalise_images.py")
    assert ("lokiml.images", "normalise") in reached
    assert ("lokiml.store", "normalise_shard") in reached
    assert "lokiml.models" not in lib.modules_used(scripts / "normalise_images.py")  # no TensorFlow code


def test_descriptor_training_reaches_no_image_or_network_code(scripts):
    used = Library(scripts).modules_used(scripts / "train_descriptors.py")
    assert "lokiml.descriptors" in used
    assert not {"lokiml.images", "lokiml.models", "lokiml.train", "lokiml.store"} & set(used), used


def test_a_new_helper_called_by_the_entry_function_counts(scripts):
    """A change two calls away, in a helper defined after its caller, in another module."""
    path = scripts / "lokiml" / "helper_mod.py"
    path.write_text("def helper():\n    return 1\n")
    pipe = scripts / "lokiml" / "pipeline.py"
    pipe.write_text(pipe.read_text() + textwrap.dedent("""

        def _calls_helper():
            from .helper_mod import helper
            return helper()
        """))
    edit_function(pipe, "split_dataset", "_calls_helper()")
    lib = Library(scripts)
    before = lib.digest(scripts / "split_dataset.py")
    path.write_text("def helper():\n    return 2\n")
    assert Library(scripts).digest(scripts / "split_dataset.py") != before
    assert "lokiml.helper_mod" in Library(scripts).imported(scripts / "split_dataset.py")


def test_the_cache_between_processes_sees_a_change(scripts, tmp_path):
    cache = tmp_path / "cache.json"
    first = Library(scripts, cache=cache).digest(scripts / "normalise_images.py")
    assert cache.exists()
    assert Library(scripts, cache=cache).digest(scripts / "normalise_images.py") == first
    edit_function(scripts / "lokiml" / "images.py", "normalise", "_unused = 2")
    assert Library(scripts, cache=cache).digest(scripts / "normalise_images.py") != first


def test_every_rule_with_a_script_has_its_code_param(project_root):
    """Each rule that runs a script gives params code=library_code("<that script>")."""
    import re

    missing = []
    for smk in sorted((project_root / "workflow" / "rules").glob("*.smk")):
        for block in re.split(r"(?m)^(?=rule \w+:)", smk.read_text()):
            m = re.match(r"rule (\w+):", block)
            script = re.search(r'script:\n\s+"\.\./scripts/(\w+)\.py"', block)
            if not (m and script) or m.group(1) == "resolve_weights":  # a download: never redone for code
                continue
            if f'code=library_code("{script.group(1)}")' not in block:
                missing.append(m.group(1))
    assert not missing, missing


def test_digests_do_not_depend_on_the_order_scripts_are_read(scripts):
    """Each script's digest alone equals the one computed after every other script (one Library, as
    common.smk has): the per-statement caches must never mix two scripts' statements up."""
    names = sorted(p.stem for p in scripts.glob("*.py"))
    alone = {n: Library(scripts).digest(scripts / f"{n}.py") for n in names}
    for order in (names, names[::-1]):
        lib = Library(scripts)
        assert {n: lib.digest(scripts / f"{n}.py") for n in order} == alone
    empty = "da39a3ee5e6b4b0d"  # sha1 of nothing: no library code reached
    assert empty not in alone.values(), [n for n, d in alone.items() if d == empty]


def test_a_module_alias_with_an_attribute_reaches_that_attribute_only(scripts):
    """`images.decode_grey` reaches decode_grey, not every function of images.py (the alias `images` is
    the base of the attribute, not a module passed around)."""
    lib = Library(scripts)
    path = scripts / "lokiml" / "probe.py"
    path.write_text("from . import images\n\n\ndef probe(data):\n    return images.decode_grey(data, 'x')\n")
    script = scripts / "probe_script.py"
    script.write_text("def main():\n    from lokiml.probe import probe\n    return probe(b'')\n")
    names = {n for m, n in lib.reached(script) if m == "lokiml.images"}
    assert "decode_grey" in names and "normalise" not in names, names


def test_a_name_that_is_only_assigned_reaches_nothing(scripts):
    """A dataclass field (or a variable) that shares its name with a module alias is no use of the module:
    lokiml.manifest's PolarityEvidence has a field `images`, which made read_export reach every function of
    images.py (normalise and augment included) until assigned names were told apart from used ones."""
    lib = Library(scripts)
    path = scripts / "lokiml" / "probe.py"
    path.write_text("from dataclasses import dataclass\n\nfrom . import images\n\n\n@dataclass\nclass Probe:\n"
                    "    images: int\n\n\ndef probe(data):\n    images_seen = images.header(data)\n"
                    "    return Probe(images=1), images_seen\n")
    script = scripts / "probe_script.py"
    script.write_text("def main():\n    from lokiml.probe import probe\n    return probe(b'')\n")
    names = {n for m, n in lib.reached(script) if m == "lokiml.images"}
    assert "header" in names and "normalise" not in names and "augment" not in names, names
