"""FastCGI record framing and name-value pairs, pinned by examples and by hypothesis."""

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from safefcgi.fastcgi.records import (
    HEADER,
    MAX_CONTENT,
    ProtocolError,
    RecordReader,
    RecordType,
    decode_pairs,
    encode_length,
    encode_pairs,
    encode_record,
    encode_stream,
    end_request,
    parse_begin_request,
    parse_end_request,
    unknown_type,
)

records = st.tuples(st.integers(0, 255), st.integers(0, 0xFFFF), st.binary(max_size=300))
names = st.binary(min_size=1, max_size=200)
values = st.binary(max_size=300)


def feed_in_pieces(data: bytes, cuts: list[int]) -> list:
    """Feed ``data`` to a reader cut at ``cuts``; return every record it gave."""
    reader = RecordReader()
    out, start = [], 0
    for cut in sorted(cuts) + [len(data)]:
        reader.feed(data[start:cut])
        start = max(start, cut)
        out.extend(reader.records())
    return out


@given(st.lists(records, max_size=8), st.lists(st.integers(0, 3000), max_size=10))
def test_records_survive_any_split_of_the_stream(items, cuts):
    data = b"".join(encode_record(kind, rid, content) for kind, rid, content in items)
    got = feed_in_pieces(data, [cut % (len(data) + 1) for cut in cuts])
    assert [(r.type, r.request_id, r.content) for r in got] == items


@given(st.binary(max_size=2000), st.lists(st.integers(0, 2000), max_size=5))
def test_arbitrary_bytes_give_records_or_a_protocol_error_and_nothing_else(data, cuts):
    try:
        feed_in_pieces(data, cuts)
    except ProtocolError as exc:
        assert "version" in str(exc)


def test_encoded_records_are_padded_to_eight_bytes():
    for size in range(0, 20):
        assert len(encode_record(RecordType.STDOUT, 1, b"x" * size)) % 8 == 0


def test_padding_sent_by_the_peer_is_skipped():
    # 3 bytes of content, 200 bytes of padding (any amount up to 255 is legal).
    data = HEADER.pack(1, RecordType.STDIN, 7, 3, 200) + b"abc" + b"\xee" * 200
    data += encode_record(RecordType.STDIN, 7)
    got = feed_in_pieces(data, [5, 100])
    assert [(r.type, r.content) for r in got] == [(5, b"abc"), (5, b"")]


def test_wrong_version_is_named():
    reader = RecordReader()
    reader.feed(b"\x02\x01\x00\x01\x00\x08\x00\x00")
    with pytest.raises(ProtocolError, match="version 2"):
        reader.next_record()


def test_an_incomplete_record_waits_for_more_bytes():
    data = encode_record(RecordType.PARAMS, 1, b"x" * 100)
    reader = RecordReader()
    reader.feed(data[:-1])
    assert reader.next_record() is None
    reader.feed(data[-1:])
    assert reader.next_record().content == b"x" * 100
    assert reader.buffered == 0


def test_content_beyond_65535_bytes_cannot_be_encoded():
    with pytest.raises(ValueError):
        encode_record(RecordType.STDOUT, 1, b"x" * (MAX_CONTENT + 1))


def test_a_large_stream_goes_out_in_full_records():
    data = bytes(range(256)) * 1000  # 256000 bytes
    encoded = b"".join(encode_stream(RecordType.STDOUT, 3, data))
    got = feed_in_pieces(encoded, [])
    assert [len(r.content) for r in got] == [65535, 65535, 65535, 256000 - 3 * 65535]
    assert b"".join(r.content for r in got) == data


def test_empty_data_encodes_to_no_records():
    assert encode_stream(RecordType.STDOUT, 1, b"") == []


@given(st.lists(st.tuples(names, values), max_size=10, unique_by=lambda pair: pair[0]))
def test_name_value_pairs_round_trip(pairs):
    decoded = decode_pairs(encode_pairs(pairs))
    assert decoded == {name.decode("latin-1"): value.decode("latin-1") for name, value in pairs}


@given(st.binary(max_size=600))
def test_arbitrary_params_decode_or_raise_a_protocol_error(data):
    try:
        decode_pairs(data)
    except ProtocolError:
        pass


def test_four_byte_lengths_are_decoded():
    # The high bit of the first byte marks a 4-byte length (spec section 3.4).
    value = b"v" * 200
    data = b"\x04" + b"\x80\x00\x00\xc8" + b"NAME" + value
    assert decode_pairs(data) == {"NAME": "v" * 200}


def test_a_short_length_may_still_be_written_with_four_bytes():
    assert decode_pairs(b"\x80\x00\x00\x01\x01ab") == {"a": "b"}


def test_lengths_of_128_and_more_are_written_with_four_bytes():
    assert encode_length(127) == b"\x7f"
    assert encode_length(128) == b"\x80\x00\x00\x80"


@pytest.mark.parametrize("data, problem", [
    (b"\x05", "between a name length"),
    (b"\x80\x00", "inside a 4-byte length"),
    (b"\x04\x02NAM", "runs past the end"),
    (b"\xff\xff\xff\xff\x00", "runs past the end"),
])
def test_truncated_params_are_named(data, problem):
    with pytest.raises(ProtocolError, match=problem):
        decode_pairs(data)


def test_params_are_bytes_as_latin1_str():
    assert decode_pairs(encode_pairs([(b"PATH_INFO", "/café".encode())])) == \
        {"PATH_INFO": "/caf\xc3\xa9"}


def test_begin_request_body_must_be_eight_bytes():
    assert parse_begin_request(struct.pack("!HB5x", 1, 1)) == (1, 1)
    with pytest.raises(ProtocolError, match="BEGIN_REQUEST body of 3 bytes"):
        parse_begin_request(b"\x00\x01\x01")


def test_end_request_and_unknown_type_bodies():
    reader = RecordReader()
    reader.feed(end_request(9, 3, 1) + unknown_type(42))
    end, unknown = reader.records()
    assert (end.type, end.request_id, parse_end_request(end.content)) == (3, 9, (3, 1))
    assert (unknown.type, unknown.request_id, unknown.content) == (11, 0, b"\x2a" + bytes(7))
