"""Canonical geocode keys: the spellings of one place in SAME, FIPS6 and UGC become one key, and
a state-level key covers the counties (or zones) of its state.

    SAME   "PSSCCC"  -> fips:SSCCC  (subdivision digit P dropped: it reaches the whole county)
    FIPS6  "0SSCCC" or "SSCCC" -> fips:SSCCC
    UGC    "SSCNNN"  -> fips:<state FIPS of SS>NNN   (county)
    UGC    "SSZNNN"  -> ugc:SSZNNN                    (zones have no county mapping)
    CCC/NNN "000" (or UGC "ALL") -> the state level: fips:SS, ugc:SSZ

Two keys match if they are equal or one is the state-level key of the other. Unknown code
systems and malformed values have no key and so never match anything.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

STATE_FIPS: Mapping[str, str] = {
    "AL": "01", "AK": "02", "AZ": "04", "AR": "05", "CA": "06", "CO": "08", "CT": "09",
    "DE": "10", "DC": "11", "FL": "12", "GA": "13", "HI": "15", "ID": "16", "IL": "17",
    "IN": "18", "IA": "19", "KS": "20", "KY": "21", "LA": "22", "ME": "23", "MD": "24",
    "MA": "25", "MI": "26", "MN": "27", "MS": "28", "MO": "29", "MT": "30", "NE": "31",
    "NV": "32", "NH": "33", "NJ": "34", "NM": "35", "NY": "36", "NC": "37", "ND": "38",
    "OH": "39", "OK": "40", "OR": "41", "PA": "42", "RI": "44", "SC": "45", "SD": "46",
    "TN": "47", "TX": "48", "UT": "49", "VT": "50", "VA": "51", "WA": "53", "WV": "54",
    "WI": "55", "WY": "56", "AS": "60", "GU": "66", "MP": "69", "PR": "72", "VI": "78",
}  # fmt: skip
"""USPS state and territory codes -> FIPS state codes (50 states, DC, AS, GU, MP, PR, VI)."""

FIPS_PREFIX = "fips:"
UGC_PREFIX = "ugc:"
_FIPS_STATE_KEY_LEN = len(FIPS_PREFIX) + 2  # fips:SS
_UGC_STATE_KEY_LEN = len(UGC_PREFIX) + 3  # ugc:SSZ

_DIGITS6 = re.compile(r"[0-9]{6}")
_DIGITS5 = re.compile(r"[0-9]{5}")
_UGC = re.compile(r"([A-Z]{2})([CZ])([0-9]{3}|ALL)")


def canonical_key(value_name: str, value: str) -> str | None:
    """The key of a geocode, or None if its system is unknown or its value malformed."""
    name = value_name.strip().upper()
    text = value.strip().upper()
    if name == "SAME":
        return _fips(text[1:]) if _DIGITS6.fullmatch(text) else None
    if name == "FIPS6":
        if _DIGITS6.fullmatch(text):
            return _fips(text[1:])
        return _fips(text) if _DIGITS5.fullmatch(text) else None
    if name == "UGC":
        return _ugc(text)
    return None


def _fips(sscc: str) -> str | None:
    state, county = sscc[:2], sscc[2:]
    if state == "00":  # SAME 000000 is "the whole country", which no subscription names
        return None
    return FIPS_PREFIX + state if county == "000" else FIPS_PREFIX + state + county


def _ugc(text: str) -> str | None:
    found = _UGC.fullmatch(text)
    if found is None:
        return None
    state, zone_or_county, number = found.groups()
    whole_state = number in ("000", "ALL")
    if zone_or_county == "Z":
        # Marine zones (PZZ, ANZ, ...) have non-state prefixes: valid as zone keys.
        return UGC_PREFIX + state + "Z" + ("" if whole_state else number)
    fips_state = STATE_FIPS.get(state)
    if fips_state is None:
        return None
    return FIPS_PREFIX + fips_state + ("" if whole_state else number)


def parent_key(key: str) -> str | None:
    """The state-level key above a county or zone key; None for a key that is state-level."""
    if key.startswith(FIPS_PREFIX):
        return key[:_FIPS_STATE_KEY_LEN] if len(key) > _FIPS_STATE_KEY_LEN else None
    if key.startswith(UGC_PREFIX):
        return key[:_UGC_STATE_KEY_LEN] if len(key) > _UGC_STATE_KEY_LEN else None
    return None


def is_state_level(key: str) -> bool:
    return parent_key(key) is None


def keys_match(a: str, b: str) -> bool:
    """Equal, or one is the state-level key of the other."""
    return a == b or parent_key(a) == b or parent_key(b) == a
