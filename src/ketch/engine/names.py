"""Names for containers nobody named: ``adjective_noun``, as Docker users expect.

The words are ketch's own: a ketch is a two-masted sailing boat, so the nouns
are things found on and around boats.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

ADJECTIVES = [
    "agile", "amber", "ancient", "bold", "brave", "breezy", "bright", "brisk", "calm",
    "careful", "cheerful", "clever", "coastal", "cosy", "curious", "daring", "deep", "eager",
    "early", "easy", "fair", "fast", "fearless", "fine", "fleet", "fresh", "friendly",
    "gentle", "gleaming", "golden", "grand", "happy", "hardy", "hearty", "honest", "jolly",
    "keen", "kind", "lively", "lucky", "merry", "mighty", "misty", "modest", "nimble",
    "noble", "patient", "plucky", "proud", "quick", "quiet", "rapid", "ready", "salty",
    "serene", "sharp", "shiny", "silent", "silver", "sleek", "snug", "sober", "solid",
    "steady", "stout", "sturdy", "sunny", "swift", "tidal", "tidy", "trusty", "vivid",
    "warm", "wise", "witty", "young", "zealous",
]

NOUNS = [
    "albatross", "anchor", "beacon", "bilge", "bollard", "boom", "bosun", "bowline",
    "breakwater", "bulwark", "buoy", "capstan", "cleat", "compass", "coracle", "cormorant",
    "cove", "cutter", "davit", "dinghy", "dolphin", "dory", "estuary", "fathom", "ferry",
    "fjord", "flotilla", "gaff", "galley", "gannet", "gull", "halyard", "harbour", "hawser",
    "helm", "heron", "hull", "inlet", "jetty", "jib", "keel", "kelp", "lagoon", "lantern",
    "lighthouse", "mainsail", "marina", "mast", "mooring", "narwhal", "oar", "otter",
    "pelican", "petrel", "pier", "porpoise", "puffin", "quay", "reef", "rigging", "rudder",
    "schooner", "seal", "shoal", "skiff", "sloop", "spinnaker", "starboard", "tern",
    "tiller", "topsail", "trawler", "wake", "wharf", "winch", "yawl",
]


def random_name(taken: Callable[[str], bool]) -> str:
    """A free ``adjective_noun``; a digit is appended after collisions, as Docker does."""
    for attempt in range(10):
        name = f"{secrets.choice(ADJECTIVES)}_{secrets.choice(NOUNS)}"
        if attempt > 2:
            name += str(secrets.randbelow(10))
        if not taken(name):
            return name
    return f"{secrets.choice(ADJECTIVES)}_{secrets.choice(NOUNS)}_{secrets.token_hex(3)}"
