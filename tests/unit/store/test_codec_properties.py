"""Our attribute-value codec agrees with boto3's TypeSerializer / TypeDeserializer.

The ack path writes items with our few lines instead of boto3 (its import costs the cold start);
these properties hold them to boto3's own reading of the same values: round trips, sets, bytes,
nested maps and numbers of DynamoDB's full 38-digit precision.
"""

from __future__ import annotations

from decimal import Decimal

from boto3.dynamodb.types import Binary, TypeDeserializer, TypeSerializer
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.store.codec import from_attribute, to_attribute

serialize, deserialize = TypeSerializer().serialize, TypeDeserializer().deserialize

BIG = st.integers(min_value=-(10**38) + 1, max_value=10**38 - 1)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    BIG,
    st.text(max_size=30),
    st.binary(min_size=1, max_size=20),
)
plain = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.dictionaries(st.text(min_size=1, max_size=10), inner, max_size=5)
    ),
    max_leaves=25,
)


def as_ours(value):
    """boto3's Python view of a value, as our codec reads it: Decimals as int, Binary as bytes,
    sets as sorted lists."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, Binary):
        return bytes(value)
    if isinstance(value, set):
        return sorted(as_ours(v) for v in value)
    if isinstance(value, list):
        return [as_ours(v) for v in value]
    if isinstance(value, dict):
        return {k: as_ours(v) for k, v in value.items()}
    return value


@settings(max_examples=300, deadline=None)
@given(plain)
def test_what_we_write_boto3_reads_back_as_the_same_value(value):
    assert as_ours(deserialize(to_attribute(value))) == value


@settings(max_examples=300, deadline=None)
@given(plain)
def test_what_boto3_writes_we_read_back_as_the_same_value(value):
    assert from_attribute(serialize(value)) == value


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        st.sets(st.text(min_size=1, max_size=10), min_size=1, max_size=5),
        st.sets(BIG, min_size=1, max_size=5),
        st.sets(st.binary(min_size=1, max_size=8), min_size=1, max_size=5),
    )
)
def test_sets_boto3_writes_read_as_sorted_lists(value):
    assert from_attribute(serialize(value)) == sorted(value)


@settings(max_examples=200, deadline=None)
@given(
    st.floats(allow_nan=False, allow_infinity=False, width=64).filter(
        lambda f: abs(f) < 1e120 and (f == 0 or abs(f) > 1e-120)
    )
)
def test_floats_keep_their_value_through_dynamodbs_decimal_numbers(value):
    back = deserialize(to_attribute(value))
    assert float(back) == value
    # DynamoDB numbers are decimals: an integral float comes back as the int its digits spell.
    assert float(from_attribute(to_attribute(value))) == value


def test_38_digit_numbers_keep_every_digit():
    n = 12345678901234567890123456789012345678
    assert to_attribute(n) == serialize(n) == {"N": str(n)}
    assert from_attribute({"N": str(n)}) == n
