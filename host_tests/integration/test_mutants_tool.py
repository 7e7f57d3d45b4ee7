# The mutation lane's own checks (tools/mutants.py): a list that no longer fits the tree, a
# mutant that does not compile, a command that cannot kill anything, are reported, never counted as
# kills. The lane itself runs in `make test-mutants`.
import pytest

from tools import mutants


def _mutant(tmp_path, src, find, replace, cmds=("pytest host_tests/unit/test_x.py",)):
    (tmp_path / "m.py").write_text(src)
    return {"name": "t", "file": "m.py", "find": find, "replace": replace,
            "killed_by": list(cmds)}


def test_the_repository_list_applies():
    ms = mutants.load()
    assert len(ms) >= 7
    for m in ms:
        assert mutants.check(m) == [], m["name"]


def test_snippet_must_occur_exactly_once(tmp_path):
    m = _mutant(tmp_path, "a = 1\na = 1\n", "a = 1\n", "a = 2\n")
    assert "found 2 times" in mutants.check(m, str(tmp_path))[0]
    m = _mutant(tmp_path, "a = 1\n", "b = 1\n", "a = 2\n")
    assert "found 0 times" in mutants.check(m, str(tmp_path))[0]
    m = _mutant(tmp_path, "a = 1\n", "a = 1\n", "a = 2\n")
    assert mutants.check(m, str(tmp_path)) == []


def test_mutant_must_compile_and_change_something(tmp_path):
    m = _mutant(tmp_path, "a = 1\n", "a = 1\n", "a = (\n")
    assert "does not compile" in mutants.check(m, str(tmp_path))[0]
    m = _mutant(tmp_path, "a = 1\n", "a", "a")
    assert "changes nothing" in mutants.check(m, str(tmp_path))[0]


def test_unknown_command_kind_is_refused(tmp_path):
    m = _mutant(tmp_path, "a = 1\n", "a = 1\n", "a = 2\n", cmds=("make test",))
    assert "must start with" in mutants.check(m, str(tmp_path))[0]
    with pytest.raises(mutants.ListError):
        mutants.argv("")


def test_a_command_that_selects_no_test_is_an_error_not_a_kill(tmp_path):
    mutants.copy_tree(str(tmp_path))
    verdict, _dt, _out = mutants.run("pytest host_tests/unit/test_store_record.py -k nosuchtest",
                                     str(tmp_path))
    assert verdict == "error"
    verdict, _dt, _out = mutants.run("pytest host_tests/unit/test_no_such_file.py", str(tmp_path))
    assert verdict == "error"
    verdict, _dt, _out = mutants.run("mp test_no_such_file", str(tmp_path))
    assert verdict == "error"
    verdict, _dt, _out = mutants.run("pytest host_tests/unit/test_store_record.py", str(tmp_path))
    assert verdict == "pass"


def test_a_mutant_is_killed_in_a_copy_not_in_the_tree(tmp_path):
    m = next(x for x in mutants.load() if x["name"] == "record-crc-bypassed")
    assert m["find"] in open(mutants.ROOT + "/firmware/store/record.py").read()
    res = mutants.attack(m, str(tmp_path))
    assert res["killed_by"] == "pytest host_tests/unit/test_store_record.py"
    assert m["find"] in open(mutants.ROOT + "/firmware/store/record.py").read()  # untouched


def test_a_mutant_no_test_notices_survives(tmp_path):
    m = {"name": "harmless", "file": "firmware/store/record.py",
         "find": "def is_valid(buf, off):\n", "replace": "def is_valid(buf, off):  # same\n",
         "killed_by": ["pytest host_tests/unit/test_store_record.py"]}
    assert mutants.check(m) == []
    res = mutants.attack(m, str(tmp_path))
    assert res["killed_by"] is None and res["errors"] == []
