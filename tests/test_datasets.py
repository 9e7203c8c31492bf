"""Tests of linrec.datasets: id maps, loaders, the synthetic generator and the splits."""

from __future__ import annotations

import re

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.sparse.linalg import svds

from linrec._kernels.text import MAX_DIGITS, parse_uint_tokens
from linrec.datasets import (
    IdMap,
    InteractionData,
    TrainTestData,
    drop_empty_users,
    from_arrays,
    heldout_users_split,
    leave_last_out_split,
    load_interactions,
    load_lastfm,
    load_lightgcn,
    make_implicit,
    make_implicit_split,
    random_holdout_split,
)
from tests.conftest import random_interactions


def _dense(X):
    return np.asarray(X.toarray())


def _same_csr(A, B):
    return (
        A.shape == B.shape
        and np.array_equal(A.indptr, B.indptr)
        and np.array_equal(A.indices, B.indices)
        and np.array_equal(A.data, B.data)
    )


def _snapshot(X):
    return X.data.copy(), X.indices.copy(), X.indptr.copy()


def _unchanged(X, snap):
    return all(np.array_equal(a, b) for a, b in zip(_snapshot(X), snap))


# ====================================================================== IdMap
class TestIdMap:
    def test_round_trip_strings(self):
        ids = IdMap(["b", "c", "a"], name="item")
        assert ids.transform(["a", "b", "c", "a"]).tolist() == [2, 0, 1, 2]
        assert ids.inverse_transform([2, 0]).tolist() == ["a", "b"]
        assert len(ids) == 3 and ids[1] == "c"
        assert np.asarray(ids).tolist() == ["b", "c", "a"]

    def test_round_trip_integers(self):
        ids = IdMap([10, 3, 7])
        assert ids.transform([7, 10]).tolist() == [2, 0]
        assert ids.transform(3).tolist() == [1]

    def test_unknown_ids_raise_listing_them(self):
        ids = IdMap(np.arange(5) * 10, name="user")
        with pytest.raises(ValueError, match=r"2 unknown user id\(s\).*\[11, 99\].*unknown='drop'"):
            ids.transform([0, 11, 99, 20])

    def test_unknown_never_mapped_to_a_neighbour(self):
        # 15 sorts between 10 and 20: a binary search would land next to it.
        ids = IdMap([10, 20, 30])
        for probe in (5, 15, 25, 35):
            with pytest.raises(ValueError, match="unknown"):
                ids.transform([probe])

    def test_drop_returns_kept_mask(self):
        ids = IdMap(["x", "y"])
        idx, kept = ids.transform(["y", "zz", "x", "q"], unknown="drop")
        assert idx.tolist() == [1, 0]
        assert kept.tolist() == [True, False, True, False]

    def test_bad_unknown_option(self):
        with pytest.raises(ValueError, match="unknown must be"):
            IdMap([1]).transform([1], unknown="ignore")

    def test_type_mismatch_is_an_error(self):
        with pytest.raises(ValueError, match="string user ids but integer ids"):
            IdMap(["1", "2"], name="user").transform([1])
        with pytest.raises(ValueError, match="integer id ids but string ids"):
            IdMap([1, 2]).transform(["1"])

    def test_duplicates_rejected(self):
        with pytest.raises(ValueError, match=r"distinct; duplicated: \['a'\]"):
            IdMap(["a", "b", "a"])

    def test_inverse_out_of_range(self):
        with pytest.raises(ValueError, match="index 3 is out of range for 3"):
            IdMap([1, 2, 3]).inverse_transform([3])

    def test_ids_are_read_only_copy(self):
        raw = np.array([5, 6])
        ids = IdMap(raw)
        raw[0] = 99
        assert ids.ids.tolist() == [5, 6]
        with pytest.raises(ValueError):
            ids.ids[0] = 1

    def test_empty_map(self):
        ids = IdMap(np.zeros(0, dtype=np.int64))
        with pytest.raises(ValueError, match="1 unknown"):
            ids.transform([1])
        idx, kept = ids.transform([1], unknown="drop")
        assert idx.size == 0 and not kept.any()


# ====================================================================== from_arrays
class TestFromArrays:
    def test_indices_and_summed_weights(self):
        data = from_arrays([0, 1, 0, 0], [2, 0, 2, 1], weights=[1.0, 2.0, 3.0, 0.5], n_items=4)
        assert isinstance(data, InteractionData)
        expected = np.array([[0, 0.5, 4.0, 0], [2.0, 0, 0, 0]], dtype=np.float32)
        np.testing.assert_array_equal(_dense(data.matrix), expected)
        assert data.matrix.dtype == np.float32 and data.matrix.has_canonical_format
        assert data.user_ids.ids.tolist() == [0, 1]
        assert data.timestamps is None

    def test_binary(self):
        data = from_arrays([0, 0, 1, 1], [1, 1, 0, 1], weights=[2, 3, 4, 0], binary=True)
        np.testing.assert_array_equal(_dense(data.matrix), [[0, 1], [1, 0]])  # 0 is no pair

    def test_raw_string_ids_sorted(self):
        data = from_arrays(["u2", "u1", "u2"], ["b", "a", "a"])
        assert data.user_ids.ids.tolist() == ["u1", "u2"]
        assert data.item_ids.ids.tolist() == ["a", "b"]
        np.testing.assert_array_equal(_dense(data.matrix), [[1, 0], [1, 1]])

    def test_map_integer_ids(self):
        data = from_arrays([1000, 5], [7, 7], map_ids=True)
        assert data.matrix.shape == (2, 1)
        assert data.user_ids.transform([1000]).tolist() == [1]

    def test_timestamps_latest_per_pair_and_zero_weights_dropped(self):
        data = from_arrays(
            [0, 0, 1, 1], [0, 0, 1, 0], weights=[1, 1, 0, 2], timestamps=[5, 9, 3, 0]
        )
        assert data.matrix.nnz == 2  # the (1, 1) pair has weight 0
        assert np.array_equal(data.timestamps.indptr, data.matrix.indptr)
        assert np.array_equal(data.timestamps.indices, data.matrix.indices)
        assert data.timestamps.data.tolist() == [9, 0]  # zero time kept explicitly

    @pytest.mark.parametrize(
        "kwargs, message",
        [
            (dict(users=[0, -1], items=[0, 0]), "user indices must be >= 0"),
            (dict(users=[0, 3], items=[0, 0], n_users=2), "n_users=2 but user index 3"),
            (dict(users=[0], items=[0, 1]), "same length"),
            (dict(users=[0], items=[0], weights=[-1.0]), "negative value"),
            (dict(users=[0], items=[0], weights=[np.nan]), "NaN"),
            (dict(users=["a"], items=[0], n_users=3), "n_users applies to integer"),
            (dict(users=[0.5], items=[0], map_ids=False), "must be integer indices"),
        ],
    )
    def test_errors(self, kwargs, message):
        with pytest.raises(ValueError, match=message):
            from_arrays(**kwargs)


# ====================================================================== LightGCN files
def _write(folder, name, text):
    path = folder / name
    path.write_text(text)
    return path


class TestLoadLightGCN:
    def test_basic(self, tmp_path):
        _write(tmp_path, "train.txt", "0 1 2\n1 0\n3\n")
        _write(tmp_path, "test.txt", "0 3\n2 4\n")
        data = load_lightgcn(tmp_path)
        assert isinstance(data, TrainTestData)
        X_train, X_test = data  # unpacks as a pair
        assert X_train.shape == X_test.shape == (4, 5)  # max ids over both files + 1
        np.testing.assert_array_equal(
            _dense(X_train), [[0, 1, 1, 0, 0], [1, 0, 0, 0, 0], [0] * 5, [0] * 5]
        )
        np.testing.assert_array_equal(
            _dense(X_test), [[0, 0, 0, 1, 0], [0] * 5, [0, 0, 0, 0, 1], [0] * 5]
        )
        assert X_train.dtype == np.float32 and X_train.has_canonical_format
        assert data.user_ids.ids.tolist() == [0, 1, 2, 3]

    def test_blank_lines_crlf_tabs_unsorted_and_repeated(self, tmp_path):
        _write(tmp_path, "train.txt", "\n1 5 2 2\r\n\n0\t3  4 \r\n")
        _write(tmp_path, "test.txt", "")
        X_train, X_test = load_lightgcn(tmp_path)
        assert X_train.shape == (2, 6) and X_test.nnz == 0
        assert X_train[1].indices.tolist() == [2, 5] and X_train.data.tolist() == [1.0] * 4

    def test_id_lists(self, tmp_path):
        _write(tmp_path, "train.txt", "0 0\n1 1\n")
        _write(tmp_path, "test.txt", "1 0\n")
        _write(tmp_path, "user_list.txt", "org_id remap_id\nalice 1\nbob 0\ncarol 2\n")
        _write(tmp_path, "item_list.txt", "org_id remap_id freebase_id\n77 1 m.x\n42 0 m.y\n")
        data = load_lightgcn(tmp_path)
        assert data.shape == (3, 2)  # the user list is longer than the ids used
        assert data.user_ids.ids.tolist() == ["bob", "alice", "carol"]
        assert data.item_ids.ids.tolist() == [42, 77]
        assert data.user_ids.transform(["alice"]).tolist() == [1]

    def test_id_list_extra_fields_and_bad_line(self, tmp_path):
        _write(tmp_path, "train.txt", "0 0 1\n")
        _write(tmp_path, "test.txt", "")
        _write(tmp_path, "item_list.txt", "org_id remap_id freebase_id\nB1 0 m.1\nB2 1\n")
        assert load_lightgcn(tmp_path).item_ids.ids.tolist() == ["B1", "B2"]
        _write(tmp_path, "item_list.txt", "B1 0\nB2 x\n")
        with pytest.raises(ValueError, match=r"item_list.txt, line 2: expected 'org_id remap_id'"):
            load_lightgcn(tmp_path)

    def test_id_list_too_short(self, tmp_path):
        _write(tmp_path, "train.txt", "0 0\n2 1\n")
        _write(tmp_path, "test.txt", "")
        _write(tmp_path, "user_list.txt", "org_id remap_id\na 0\nb 1\n")
        with pytest.raises(
            ValueError, match=r"maps 2 user ids but train.txt/test.txt use user id 2"
        ):
            load_lightgcn(tmp_path)

    def test_id_list_bad_remap(self, tmp_path):
        _write(tmp_path, "train.txt", "0 0\n")
        _write(tmp_path, "test.txt", "")
        _write(tmp_path, "item_list.txt", "org_id remap_id\na 0\nb 0\n")
        with pytest.raises(ValueError, match=r"item_list.txt: remap ids must be 0 \.\. 1"):
            load_lightgcn(tmp_path)

    @pytest.mark.parametrize(
        "text, line, token",
        [("0 1 2\n1 x 3\n", 2, "x"), ("0 1\n\n2 1.5\n", 3, "1.5"), ("0 1;2\n", 1, "1;2")],
    )
    def test_malformed_token_names_file_and_line(self, tmp_path, text, line, token):
        _write(tmp_path, "train.txt", text)
        _write(tmp_path, "test.txt", "")
        pattern = rf"train.txt, line {line}: cannot read '{re.escape(token)}' as an integer id"
        with pytest.raises(ValueError, match=pattern):
            load_lightgcn(tmp_path)

    def test_negative_id(self, tmp_path):
        _write(tmp_path, "train.txt", "0 1\n")
        _write(tmp_path, "test.txt", "0 2\n1 -4\n")
        with pytest.raises(ValueError, match=r"test.txt, line 2: negative id -4"):
            load_lightgcn(tmp_path)

    def test_too_many_digits(self, tmp_path):
        _write(tmp_path, "train.txt", "0 1\n1 1234567890123456789\n")
        _write(tmp_path, "test.txt", "")
        with pytest.raises(ValueError, match=r"train.txt, line 2: id 1234567890123456789 has"):
            load_lightgcn(tmp_path)

    def test_matches_obvious_parser_on_random_files(self, tmp_path, rng):
        """The vectorised byte parser against a per-token Python reading of the same text."""
        separators = [" ", "  ", "\t", " \t "]
        for trial in range(5):
            lines, expected = [], {}
            for user in rng.permutation(40):
                items = rng.integers(0, 3000, size=rng.integers(0, 8)).tolist()
                expected.setdefault(int(user), set()).update(items)
                tokens = [str(user).zfill(int(rng.integers(1, 4)))] + [str(i) for i in items]
                sep = separators[int(rng.integers(len(separators)))]
                lines.append(sep.join(tokens) + (" " if rng.random() < 0.3 else ""))
                if rng.random() < 0.1:
                    lines.append("")
            ending = "\r\n" if trial % 2 else "\n"
            (tmp_path / "train.txt").write_bytes(ending.join(lines).encode())
            _write(tmp_path, "test.txt", "")
            X_train, _ = load_lightgcn(tmp_path)
            n_items = max(max(v) for v in expected.values() if v) + 1
            assert X_train.shape == (40, n_items)
            for user, items in expected.items():
                assert X_train[user].indices.tolist() == sorted(items)

    def test_missing_files(self, tmp_path):
        with pytest.raises(FileNotFoundError, match=r"train\.txt"):
            load_lightgcn(tmp_path)
        with pytest.raises(FileNotFoundError, match="not a folder"):
            load_lightgcn(tmp_path / "nope")


# ====================================================================== text kernel
def _reference_parse(data: bytes):
    """The obvious byte-by-byte reading with the kernel's contract (slow, for tests)."""
    values, lines, line, token, token_start = [], [], 0, "", 0
    for position, byte in enumerate(data + b" "):
        char = chr(byte)
        if char.isdigit() and char.isascii():
            if not token:
                token_start = position
            token += char
            if len(token) > MAX_DIGITS:
                return [], [], token_start
            continue
        if token:
            values.append(int(token))
            lines.append(line)
            token = ""
        if char == "\n":
            line += 1
        elif char not in " \t\r":
            return [], [], position
    return values, lines, -1


def test_parse_kernel_matches_reference(rng):
    alphabet = np.frombuffer(b"0123456789 \t\r\n\n  x-", dtype=np.uint8)
    weights = np.array([3.0] * 10 + [4, 1, 1, 2, 2, 3, 3, 0.02, 0.02])
    weights /= weights.sum()
    for size in [0, 1, 2, 5, 40, 400, 4000] * 6:
        data = rng.choice(alphabet, size=size, p=weights).astype(np.uint8).tobytes()
        if rng.random() < 0.2:  # an over-long token somewhere
            data += b" " + b"7" * int(rng.integers(17, 21)) + b"\n"
        values, lines, bad = parse_uint_tokens(np.frombuffer(data, dtype=np.uint8))
        ref_values, ref_lines, ref_bad = _reference_parse(data)
        assert bad == ref_bad, data
        assert values.tolist() == ref_values and lines.tolist() == ref_lines
        assert values.dtype == lines.dtype == np.int64


# ====================================================================== delimited files
class TestLoadInteractions:
    def test_tab_no_header_integer_ids(self, tmp_path):
        path = _write(tmp_path, "a.tsv", "10\t7\t3\n2\t7\t1\n10\t5\t2\n10\t7\t1\n")
        data = load_interactions(path)
        assert data.user_ids.ids.tolist() == [2, 10]  # integer ids sorted numerically
        assert data.item_ids.ids.tolist() == [5, 7]
        np.testing.assert_array_equal(_dense(data.matrix), [[0, 1], [2, 4]])  # repeats summed

    def test_csv_header_in_any_order_with_string_ids_and_timestamps(self, tmp_path):
        text = "item,timestamp,user,rating\nx,100,bob,4\ny,50,ann,5\nx,20,ann,1\nx,30,ann,2\n"
        data = load_interactions(_write(tmp_path, "r.csv", text))
        assert data.user_ids.ids.tolist() == ["ann", "bob"]
        np.testing.assert_array_equal(_dense(data.matrix), [[3, 5], [4, 0]])
        np.testing.assert_array_equal(_dense(data.timestamps), [[30, 50], [100, 0]])

    def test_utf8_string_ids(self, tmp_path):
        path = tmp_path / "u.tsv"
        path.write_text("josé\tcafé\t2\nzoë\tcafé\t1\njosé\tthé\t1\n", encoding="utf-8")
        data = load_interactions(path)
        assert data.user_ids.ids.tolist() == ["josé", "zoë"]
        assert data.item_ids.transform(["thé"]).tolist() == [1]
        np.testing.assert_array_equal(_dense(data.matrix), [[2, 1], [1, 0]])

    def test_iso_dates(self, tmp_path):
        text = "u1;i1;2020-01-01T00:00:10\nu1;i2;2020-01-01\n"
        data = load_interactions(
            _write(tmp_path, "d.txt", text), columns=("user", "item", "timestamp")
        )
        assert data.timestamps.data.tolist() == [1577836810, 1577836800]

    def test_whitespace_and_skipped_column(self, tmp_path):
        text = "1  2 0.5 junk\n\n3 2   1.5 junk\n"
        data = load_interactions(
            _write(tmp_path, "w.txt", text), columns=("user", "item", "weight", None)
        )
        np.testing.assert_array_equal(_dense(data.matrix), [[0.5], [1.5]])

    def test_binary_and_explicit_header(self, tmp_path):
        path = _write(tmp_path, "h.csv", "a,b,c\n1,2,5\n1,3,7\n")
        data = load_interactions(path, header=True, columns=("user", "item", "weight"), binary=True)
        np.testing.assert_array_equal(_dense(data.matrix), [[1, 1]])

    def test_header_inferred_from_non_numeric_weight(self, tmp_path):
        path = _write(tmp_path, "h.csv", "who,what,how_much\n1,2,5\n")
        data = load_interactions(path)
        assert data.matrix.nnz == 1 and data.matrix.data.tolist() == [5.0]

    def test_header_names_pick_columns_and_skip_unknown_ones(self, tmp_path):
        text = "userId,movieId,rating,timestamp,tag\n1,10,4.5,100,funny\n2,10,3,50,dull\n"
        data = load_interactions(_write(tmp_path, "ml.csv", text))
        np.testing.assert_array_equal(_dense(data.matrix), [[4.5], [3.0]])
        assert data.timestamps.data.tolist() == [100, 50]

    def test_crlf_and_trailing_blank_lines(self, tmp_path):
        path = tmp_path / "c.tsv"
        path.write_bytes(b"1\t2\t3\r\n4\t5\t6\r\n\r\n\r\n")
        data = load_interactions(path)
        assert data.matrix.nnz == 2 and data.matrix.sum() == 9

    def test_given_maps_unknown_error_and_drop(self, tmp_path):
        train = load_interactions(_write(tmp_path, "train.csv", "a,x\nb,y\n"))
        test_path = _write(tmp_path, "test.csv", "a,y\nc,x\nb,z\n")
        with pytest.raises(ValueError, match=r"test.csv: 1 unknown user id\(s\).*\['c'\]"):
            load_interactions(test_path, user_ids=train.user_ids, item_ids=train.item_ids)
        test = load_interactions(
            test_path, user_ids=train.user_ids, item_ids=train.item_ids, unknown="drop"
        )
        assert test.matrix.shape == train.matrix.shape
        np.testing.assert_array_equal(_dense(test.matrix), [[0, 1], [0, 0]])

    @pytest.mark.parametrize(
        "text, kwargs, message",
        [
            ("1,2,3\n4,5\n6,7,8\n", {}, r"bad.txt, line 2: expected 3 fields .* found 2"),
            ("1\t2\n\n3\t4\t5\n", {}, r"bad.txt, line 3: expected 2 fields .* found 3"),
            ("1,2,3\n4,,6\n", {}, r"bad.txt, line 2: field 2 is empty"),
            ("1,2,3\n4,5,lots\n", {}, r"bad.txt, line 2: weight 'lots' is not a number"),
            ("1,2,3\n4,5,-1\n", {}, r"negative value \(-1.0\) in .*bad.txt, line 2"),
            ("1,2,3\n4,5,nan\n", {}, r"NaN \(nan\) in .*bad.txt, line 2"),
            ("1,2,3,4,5\n", {}, r"5 fields per line; pass columns="),
            ("1,2\n", {"columns": ("user", "weight")}, r"must include 'user' and 'item'"),
            ("1,2\n", {"columns": ("user", "rating")}, r"unknown column 'rating'"),
            ("1,2\n", {"columns": ("user", "item", "weight")}, r"3 entries but the file has 2"),
            ("user,item\n", {}, r"holds a header but no interactions"),
            ("\n\n", {}, r"holds no interactions"),
            ("1,2\n", {"sep": "::"}, r"sep must be None \(sniff\) or one character"),
            ("1,2\n", {"header": "yes"}, r"header must be 'infer', True or False"),
            (
                "1,2,x\n3,4,y\n",
                {"columns": ("user", "item", "timestamp"), "header": False},
                r"bad.txt, line 1: timestamp 'x' is not a number or an ISO date",
            ),
        ],
    )
    def test_malformed(self, tmp_path, text, kwargs, message):
        with pytest.raises(ValueError, match=message):
            load_interactions(_write(tmp_path, "bad.txt", text), **kwargs)

    def test_not_text(self, tmp_path):
        path = tmp_path / "bin.dat"
        path.write_bytes(b"\xff\xfe\x00\x01")
        with pytest.raises(ValueError, match="not UTF-8 text"):
            load_interactions(path)


class TestLoadLastfmSmall:
    def test_shared_maps(self, tmp_path):
        _write(tmp_path, "data1.txt", "1\t10\t5\r\n2\t11\t1\r\n")
        _write(tmp_path, "test1.txt", "3\t12\t2\r\n1\t11\t4\r\n")
        data = load_lastfm(tmp_path)
        assert data.shape == (3, 3)
        assert data.user_ids.ids.tolist() == [1, 2, 3]
        np.testing.assert_array_equal(_dense(data.test), [[0, 1, 0], [0, 0, 0], [0, 0, 1]])
        counts = load_lastfm(tmp_path, binary=False)
        assert counts.train.sum() == 6 and counts.test.sum() == 6


# ====================================================================== real data
@pytest.mark.data
class TestRealData:
    @pytest.mark.parametrize(
        "name, shape, n_train, n_test",
        [
            ("gowalla", (29858, 40981), 810128, 217242),
            ("yelp2018", (31668, 38048), 1237259, 324147),
        ],
    )
    def test_lightgcn_counts(self, shared_data, name, shape, n_train, n_test):
        data = load_lightgcn(shared_data / name)
        assert data.train.shape == data.test.shape == shape
        assert (data.train.nnz, data.test.nnz) == (n_train, n_test)
        assert data.train.multiply(data.test).nnz == 0
        assert np.diff(data.train.indptr).min() > 0  # every user has training items
        # One line read the obvious way must match its row.
        lines = (shared_data / name / "train.txt").read_text().splitlines()
        fields = [int(t) for t in lines[123].split()]
        assert sorted(set(fields[1:])) == data.train[fields[0]].indices.tolist()
        assert len(data.user_ids) == shape[0] and len(data.item_ids) == shape[1]

    def test_gowalla_raw_ids(self, shared_data):
        data = load_lightgcn(shared_data / "gowalla")
        assert data.user_ids[0] == 343 and data.item_ids[0] == 8975
        assert data.user_ids.transform([5258]).tolist() == [1]

    def test_lastfm(self, shared_data):
        data = load_lastfm(shared_data / "lastfm")
        # 1,880 distinct users (ids 1..1892 with gaps) and 4,489 items across both files.
        assert data.shape == (1880, 4489)
        assert (data.train.nnz, data.test.nnz) == (42135, 10533)
        assert set(np.unique(data.train.data)) == {1.0}
        raw = load_interactions(shared_data / "lastfm" / "data1.txt")
        assert raw.matrix.shape == (1878, 4476) and raw.matrix.nnz == 42135
        assert raw.user_ids[0] == 1
        first = (shared_data / "lastfm" / "data1.txt").read_text().splitlines()[0].split("\t")
        u, i = (raw.user_ids.transform([int(first[0])]), raw.item_ids.transform([int(first[1])]))
        assert raw.matrix[u[0], i[0]] == float(first[2])


# ====================================================================== drop_empty_users
def test_drop_empty_users():
    X = sp.csr_matrix(np.array([[1, 0], [0, 0], [0, 2], [0, 0]], dtype=np.float32))
    Y = sp.csr_matrix(np.array([[0, 1], [1, 0], [0, 0], [1, 1]]))
    snap = _snapshot(X)
    users = IdMap(["a", "b", "c", "d"], name="user")
    X_kept, Y_kept, names, ids, kept = drop_empty_users(
        X, Y, users, np.arange(4) * 10, return_index=True
    )
    assert kept.tolist() == [0, 2]
    np.testing.assert_array_equal(_dense(X_kept), [[1, 0], [0, 2]])
    np.testing.assert_array_equal(_dense(Y_kept), [[0, 1], [0, 0]])
    assert names.ids.tolist() == ["a", "c"] and ids.tolist() == [0, 20]
    assert _unchanged(X, snap)
    assert drop_empty_users(X).shape == (2, 2)
    with pytest.raises(ValueError, match="argument 2 has 3 rows but X has 4"):
        drop_empty_users(X, np.zeros(3))


# ====================================================================== generator
def _recall_at_20(scores, X_train, X_test):
    """LightGCN Recall@20 (hits / |test|) over users with test items, seen items excluded."""
    scores = np.array(scores, dtype=np.float64)
    scores[X_train.nonzero()] = -np.inf
    top = np.argsort(-scores, axis=1, kind="stable")[:, :20]
    hits = np.take_along_axis(_dense(X_test) > 0, top, axis=1).sum(axis=1)
    n_test = np.diff(X_test.indptr)
    has_test = n_test > 0
    return float(np.mean(hits[has_test] / n_test[has_test]))


class TestMakeImplicit:
    def test_structure(self):
        X = make_implicit()
        assert X.shape == (2000, 1000) and X.format == "csr" and X.dtype == np.float32
        assert X.has_canonical_format and set(np.unique(X.data)) == {1.0}
        activity = np.diff(X.indptr)
        assert activity.min() >= 5 and activity.max() <= 500
        assert abs(X.nnz / (2000 * 1000) - 0.02) < 0.004  # density close to the target
        # Heavy tails: users and items far above the median.
        assert activity.max() > 10 * np.median(activity)
        popularity = np.sort(np.diff(X.tocsc().indptr))[::-1]
        # The top 10% of items hold > 25% of the interactions (10% if uniform; measured 28%
        # here, 40% on Gowalla).
        assert popularity[:100].sum() > 0.25 * X.nnz
        assert popularity[0] > 8 * np.median(popularity)

    def test_deterministic_and_seeded(self):
        assert _same_csr(make_implicit(300, 200), make_implicit(300, 200))
        assert not _same_csr(make_implicit(300, 200), make_implicit(300, 200, random_state=1))
        rng = np.random.default_rng(5)
        assert make_implicit(50, 40, random_state=rng).shape == (50, 40)

    def test_low_rank_model_beats_popularity(self):
        X = make_implicit()
        X_train, X_test = random_holdout_split(X, test_fraction=0.2, random_state=1)
        popularity = np.asarray(X_train.sum(axis=0)).ravel()
        recall_pop = _recall_at_20(np.tile(popularity, (X.shape[0], 1)), X_train, X_test)
        # PureSVD: project each user's training row on the top-16 right singular vectors.
        _, _, vt = svds(X_train.astype(np.float64), k=16, random_state=0)
        recall_svd = _recall_at_20((X_train @ vt.T) @ vt, X_train, X_test)
        assert recall_svd >= 1.5 * recall_pop, (recall_svd, recall_pop)

    def test_popularity_only_when_no_tastes(self):
        # With preference_strength=0 the planted factors carry no signal.
        X = make_implicit(preference_strength=0.0, noise=0.0)
        X_train, X_test = random_holdout_split(X, random_state=1)
        popularity = np.asarray(X_train.sum(axis=0)).ravel()
        recall_pop = _recall_at_20(np.tile(popularity, (X.shape[0], 1)), X_train, X_test)
        _, _, vt = svds(X_train.astype(np.float64), k=16, random_state=0)
        recall_svd = _recall_at_20((X_train @ vt.T) @ vt, X_train, X_test)
        assert recall_svd < 1.1 * recall_pop

    def test_return_factors(self):
        X, factors = make_implicit(100, 60, n_factors=4, return_factors=True)
        assert factors["user_factors"].shape == (100, 4)
        assert factors["item_factors"].shape == (60, 4)
        np.testing.assert_allclose(np.linalg.norm(factors["item_factors"], axis=1), 1.0)
        assert factors["item_log_popularity"].shape == (60,)
        np.testing.assert_array_equal(factors["user_activity"], np.diff(X.indptr))

    @pytest.mark.parametrize(
        "kwargs, message",
        [
            (dict(n_users=0), "n_users must be in"),
            (dict(n_items=2.5), "n_items must be an integer"),
            (dict(density=0.0), "density must be in"),
            (dict(density=0.9), "density must be in"),
            (dict(activity_exponent=1.0), "activity_exponent must be in"),
            (dict(noise=1.5), "noise must be in"),
            (dict(preference_strength=np.inf), "preference_strength must be a finite"),
            (dict(n_items=10, min_interactions=6), "min_interactions must be in"),
            (dict(random_state="x"), "random_state must be"),
        ],
    )
    def test_bad_parameters(self, kwargs, message):
        with pytest.raises(ValueError, match=message):
            make_implicit(**kwargs)

    def test_split_helper(self):
        X_train, X_test = make_implicit_split(n_users=300, n_items=200, test_fraction=0.25)
        X = make_implicit(n_users=300, n_items=200)
        assert X_train.multiply(X_test).nnz == 0
        # Same seed: the union is the generated matrix.
        assert _same_csr((X_train + X_test).tocsr(), X)
        with pytest.raises(ValueError, match="does not return factors"):
            make_implicit_split(return_factors=True)


# ====================================================================== splits
def _check_partition(X, parts):
    """Parts have X's shape, are pairwise disjoint, and sum to X (values kept)."""
    X = sp.csr_matrix(X)
    for part in parts:
        assert part.shape == X.shape and part.format == "csr" and part.has_canonical_format
    total = parts[0].copy()
    for part in parts[1:]:
        assert total.multiply(part).nnz == 0
        total = total + part
    np.testing.assert_array_equal(_dense(total), _dense(X))


class TestRandomHoldout:
    def test_invariants(self, rng):
        X = random_interactions(rng, n_users=80, n_items=50, density=0.2, binary=False)
        snap = _snapshot(X)
        X_train, X_test = random_holdout_split(X, test_fraction=0.2, random_state=3)
        _check_partition(X, [X_train, X_test])
        assert _unchanged(X, snap)
        n = np.diff(X.indptr)
        expected = np.minimum(np.floor(0.2 * n + 0.5), n - 1)
        np.testing.assert_array_equal(np.diff(X_test.indptr), expected)
        assert np.diff(X_train.indptr).min() >= 1
        assert X_train.dtype == X.dtype

    def test_deterministic_and_seed_dependent(self, rng):
        X = random_interactions(rng, n_users=50, n_items=40, density=0.3)
        a = random_holdout_split(X, random_state=7)
        b = random_holdout_split(X, random_state=7)
        c = random_holdout_split(X, random_state=8)
        assert _same_csr(a[1], b[1]) and not _same_csr(a[1], c[1])

    def test_min_train(self):
        X = np.ones((3, 10))
        X[1, 3:] = 0  # 3 items
        X_train, X_test = random_holdout_split(X, test_fraction=0.9, min_train=2)
        assert np.diff(X_train.indptr).tolist() == [2, 2, 2]
        X_train, X_test = random_holdout_split(X, test_fraction=0.5, min_train=0)
        assert np.diff(X_test.indptr).tolist() == [5, 2, 5]

    def test_uniform_choice(self):
        # Each of 10 items is held out with probability ~0.3 over many users.
        X = np.ones((3000, 10))
        _, X_test = random_holdout_split(X, test_fraction=0.3, random_state=0)
        share = np.asarray(X_test.sum(axis=0)).ravel() / 3000
        np.testing.assert_allclose(share, 0.3, atol=0.03)

    def test_errors(self):
        with pytest.raises(ValueError, match="test_fraction must be in"):
            random_holdout_split(np.ones((2, 2)), test_fraction=1.0)
        with pytest.raises(ValueError, match="negative"):
            random_holdout_split(-np.ones((2, 2)))


class TestLeaveLastOut:
    def test_latest_go_to_test(self, rng):
        X = random_interactions(rng, n_users=40, n_items=30, density=0.3)
        times = X.copy()
        times.data = rng.permutation(X.nnz).astype(np.float64)  # distinct times
        snap = _snapshot(X)
        X_train, X_test = leave_last_out_split(X, times, n_last=2)
        _check_partition(X, [X_train, X_test])
        assert _unchanged(X, snap)
        for u in range(X.shape[0]):
            t = times[u].toarray().ravel()
            row = X[u].indices
            k = min(2, row.size - 1)
            latest = row[np.argsort(t[row])[::-1][:k]]
            assert sorted(latest.tolist()) == X_test[u].indices.tolist()

    def test_aligned_array_and_ties(self):
        X = sp.csr_matrix(np.array([[1, 1, 1, 0], [1, 0, 1, 1]]))
        # Aligned with X.data in canonical order: row 0 all tied, row 1 item 0 is latest.
        _, X_test = leave_last_out_split(X, np.array([5, 5, 5, 9, 1, 2]))
        assert X_test[0].indices.tolist() == [2]  # tie: highest item index counts as latest
        assert X_test[1].indices.tolist() == [0]

    def test_from_loaded_timestamps(self, tmp_path):
        text = "user,item,timestamp\na,x,3\na,y,0\nb,y,7\nb,x,8\nb,z,1\n"
        data = load_interactions(_write(tmp_path, "t.csv", text))
        _, X_test = leave_last_out_split(data.matrix, data.timestamps)
        assert X_test[0].indices.tolist() == [0] and X_test[1].indices.tolist() == [0]

    def test_errors(self):
        X = sp.csr_matrix(np.eye(3))
        with pytest.raises(ValueError, match="same stored entries as X"):
            leave_last_out_split(X, sp.csr_matrix(np.ones((3, 3))))
        with pytest.raises(ValueError, match=r"1-D array of X\.nnz = 3"):
            leave_last_out_split(X, np.zeros(4))
        with pytest.raises(ValueError, match="NaN"):
            leave_last_out_split(X, np.array([1.0, np.nan, 2.0]))
        with pytest.raises(ValueError, match="n_last must be in"):
            leave_last_out_split(X, np.zeros(3), n_last=0)


class TestHeldoutUsers:
    def test_invariants(self, rng):
        X = random_interactions(rng, n_users=120, n_items=60, density=0.15)
        snap = _snapshot(X)
        X_train, X_fold_in, X_test, train_users, heldout = heldout_users_split(
            X, 30, random_state=4, return_indices=True
        )
        assert _unchanged(X, snap)
        assert X_train.shape == (90, 60) and X_fold_in.shape == X_test.shape == (30, 60)
        assert np.intersect1d(train_users, heldout).size == 0
        assert np.union1d(train_users, heldout).tolist() == list(range(120))
        assert (np.diff(X.indptr)[heldout] >= 5).all()
        np.testing.assert_array_equal(_dense(X_train), _dense(X[train_users]))
        _check_partition(X[heldout], [X_fold_in, X_test])
        n = np.diff(X[heldout].indptr)
        expected = np.maximum(np.floor(0.2 * n + 0.5), 1)
        np.testing.assert_array_equal(np.diff(X_test.indptr), expected)
        assert np.diff(X_fold_in.indptr).min() >= 1
        again = heldout_users_split(X, 30, random_state=4)
        assert all(_same_csr(a, b) for a, b in zip(again, (X_train, X_fold_in, X_test)))

    def test_not_enough_users(self):
        X = np.ones((10, 4))  # every user has 4 < 5 interactions
        with pytest.raises(ValueError, match="only 0 of 10 users have at least"):
            heldout_users_split(X, 2)
        with pytest.raises(ValueError, match="leaves no training user"):
            heldout_users_split(np.ones((3, 6)), 3)
