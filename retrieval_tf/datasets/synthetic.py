"""A deterministic synthetic e-commerce world: catalogue, users, browsing
sessions, search queries with graded relevance, and biased search clicks.

The world exists so that every package can be trained, tested and demonstrated
without real data, and so that effects the five papers care about can be
measured against a known ground truth. `generate(SyntheticConfig(seed=s))`
returns the same bytes for the same configuration; each part of the world draws
from its own generator (`np.random.default_rng([seed, part])`), so changing,
say, `num_queries` leaves the items, users and browsing events unchanged.

Generative story
----------------
1. Taxonomy and words. A 3-level category tree (root -> mid -> leaf) is taken
   from a built-in bank of real product words (8 roots x 4 mids x 4 leaves,
   e.g. electronics -> computers -> mouse), extended with pronounceable
   pseudo-words when the configured tree is larger. Every leaf has a product
   noun and possibly synonyms ("laptop" ~ "notebook"); titles use the noun,
   queries sometimes a synonym. Brands belong to one root and have a price
   tier. Some surface words are polysemous: they name products of unrelated
   roots ("mouse": computers and cat toys, "bass": subwoofers and fish;
   "apple" is an electronics brand and a fruit, "jaguar" a sports brand and a
   plush toy). Every clean word also gets character-typo variants (deletion,
   transposition, substitution, doubling) that only queries use.
2. Items. Each leaf has at least one item; the rest are spread over leaves of
   varying size. An item has a brand (Zipf within its root), a shop (likewise),
   a price tier (mostly its brand's), a log-normal price around its leaf's
   level scaled by the tier, an optional colour, size and adjective, a title
   "brand [colour] [size] [adjective] noun", a Zipf popularity over a random
   rank, and a latent vector: its interest's centroid + a leaf offset + a tier
   offset + noise. Interests are contiguous groups of leaves (by default one
   per mid category).
3. Users. Gender, age bucket and purchase power (power depends on age). Each
   user holds 1..`max_interests_per_user` interests drawn from logits of its
   (gender, age) group, with Dirichlet weights and one favourite leaf per
   interest, and a peak hour of activity.
4. Browsing sessions. A user's events (count ~ Poisson(Gamma)) are cut into
   sessions (geometric lengths). A session picks one of the user's interests
   and an anchor leaf (the favourite or a popular leaf of the interest). Each
   event is, in turn: a popular-but-irrelevant item (`noise_rate`, drawn by
   global popularity), an item of the anchor leaf (`session_focus`, at the
   user's price tier with probability `price_affinity`), or any item of the
   interest; items within a range are drawn by popularity. Events carry a
   result-list position (examination ~ 1/(pos+1)^`position_bias`), a purchase
   flag (likelier at the user's price tier), a timestamp and an hour of day
   (sessions start around the user's peak hour on random days; sessions never
   overlap; events are seconds to minutes apart).
5. Queries. Query rows are rendered from a popularity-drawn seed item: the
   noun (or a synonym), optionally brand, colour, size and adjective, or the
   brand alone; a share get a typo. Each row's intent is the seed's
   structured fields it mentions (leaf, brand, colour, size; -1 where not
   mentioned). Identical strings merge into one query, so a polysemous string
   has several intents; the first `num_queries` distinct strings are kept (one
   noun-only or brand-only row per meaning of each polysemous word comes
   first, so those queries always exist).
6. Graded relevance of an item to one intent: 3 = leaf (or brand, for a brand
   query) and every mentioned field match; 2 = the product (and brand) match
   but colour or size differ; 1 = related: same leaf but another brand, or a
   sibling leaf of the same mid category; 0 = otherwise. A query's grade is
   the maximum over its intents. Judgments cover a bounded candidate set per
   query (every seed item, up to `judged_per_query` items of the intended
   (leaf, brand) / leaf / brand, up to `judged_related` of the mid category,
   `judged_random` uniform items); `SyntheticWorld.relevance` grades any pair.
7. Search sessions. A search follows one of the user's browsing events (so
   the user's real-time clicks precede it); its intent is mostly that
   session's anchor leaf, else another interest; the user issues one of the
   query rows seeded in that leaf (else in the interest, else any). The
   engine shows `results_per_search` items for the *string* (each slot from
   a random intent of the query, so "apple" shows phones and fruit): from the
   intent's items (`result_relevance`), from its mid/root category, or
   globally popular. The user clicks with probability examination(position)
   x attractiveness(grade under the user's own intent) x price-tier match x
   (1 + `popularity_click_boost` x popularity percentile) x (1 +
   `recent_brand_click_boost` when the item's brand is the brand of one of
   the user's last `RECENT_BRAND_EVENTS` browsing events): clicks are biased
   by position and popularity, not only by relevance, and (when that boost
   is on) by a personal taste that only the user's history shows.

`to_rec_dataset()` and `to_search_dataset()` convert the world into the
library's `RecDataset` / `SearchDataset` containers.
"""

from __future__ import annotations

import dataclasses
import math
import types
from typing import Dict, Iterable, Iterator, Optional, Tuple, Union

import numpy as np

from retrieval_tf.datasets.types import (Interactions, Judgments, RecDataset,
                                         SearchDataset, Vocabulary)

# ---------------------------------------------------------------------------
# The word bank.

_COLOURS = ("red", "blue", "black", "white", "green", "grey", "pink",
            "yellow", "purple", "brown", "silver", "gold")
_SIZES = ("small", "medium", "large", "xl")
_GENERIC_ADJECTIVES = ("classic", "premium", "compact", "durable", "modern")

# (root, adjectives, colour rate, size rate,
#  ((mid, ((noun, *synonyms), ...)), ...)), ordered so that small trees keep
# the polysemous words.
_TAXONOMY = (
    ("electronics", ("wireless", "smart", "portable", "digital", "gaming"),
     0.6, 0.2, (
         ("computers", (("mouse",), ("laptop", "notebook"), ("keyboard",),
                        ("monitor", "screen", "display"))),
         ("audio", (("bass", "subwoofer"),
                    ("headphones", "earphones", "headset"), ("speaker",),
                    ("microphone", "mic"))),
         ("phones", (("smartphone", "cellphone", "mobile"), ("case", "cover"),
                     ("charger", "adapter"), ("tablet",))),
         ("cameras", (("camera",), ("lens",), ("tripod",),
                      ("drone", "quadcopter"))))),
    ("food", ("organic", "fresh", "spicy", "sweet", "crunchy"), 0.0, 0.3, (
        ("fruit", (("apple",), ("banana",), ("mango",), ("grapes",))),
        ("seafood", (("bass",), ("salmon",), ("shrimp", "prawns"),
                     ("tuna",))),
        ("snacks", (("chips", "crisps"), ("cookies", "biscuits"),
                    ("chocolate",), ("nuts",))),
        ("drinks", (("coffee",), ("tea",), ("juice",), ("soda", "pop"))))),
    ("pets", ("durable", "natural", "cozy", "chewy", "reflective"), 0.5, 0.5, (
        ("cats", (("mouse",), ("litter",), ("scratcher", "scratchpost"),
                  ("catnip",))),
        ("dogs", (("leash", "lead"), ("collar",), ("kibble", "dogfood"),
                  ("kennel", "crate"))),
        ("fish", (("aquarium", "fishtank"), ("filter",), ("flakes",),
                  ("heater",))),
        ("birds", (("birdcage", "cage"), ("perch",), ("birdseed", "seed"),
                   ("feeder",))))),
    ("toys", ("soft", "deluxe", "electric", "wooden", "educational"), 0.6,
     0.3, (
         ("plush", (("jaguar",), ("teddy", "teddybear"), ("unicorn",),
                    ("bunny", "rabbit"))),
         ("vehicles", (("truck",), ("train",), ("crane",), ("racecar",))),
         ("games", (("puzzle", "jigsaw"), ("boardgame",), ("cards",),
                    ("dominoes",))),
         ("building", (("blocks", "bricks"), ("robot",), ("kit",),
                       ("marbles",))))),
    ("sports", ("lightweight", "pro", "durable", "waterproof", "foldable"),
     0.6, 0.4, (
         ("fitness", (("dumbbell", "weights"), ("mat",), ("treadmill",),
                      ("kettlebell",))),
         ("outdoor", (("tent",), ("backpack", "rucksack"), ("hammock",),
                      ("lantern",))),
         ("cycling", (("bicycle", "bike"), ("helmet",), ("pump",),
                      ("gloves",))),
         ("team", (("ball",), ("racket", "racquet"), ("jersey",),
                   ("net",))))),
    ("apparel", ("slim", "casual", "vintage", "cotton", "leather"), 0.9, 0.8, (
        ("shoes", (("sneakers", "trainers"), ("boots",), ("sandals",),
                   ("heels", "stilettos"))),
        ("tops", (("tshirt", "tee"), ("shirt",),
                  ("sweater", "jumper", "pullover"),
                  ("hoodie", "sweatshirt"))),
        ("bottoms", (("jeans", "denim"), ("trousers", "pants"), ("skirt",),
                     ("shorts",))),
        ("accessories", (("bag", "handbag", "purse"), ("watch", "timepiece"),
                         ("belt",), ("scarf",))))),
    ("home", ("modern", "wooden", "cozy", "classic", "compact"), 0.6, 0.4, (
        ("furniture", (("sofa", "couch"), ("table",), ("chair", "seat"),
                       ("bed",))),
        ("kitchen", (("pan", "skillet"), ("kettle",), ("blender", "mixer"),
                     ("knife",))),
        ("decor", (("lamp", "light"), ("rug", "carpet"), ("vase",),
                   ("mirror",))),
        ("bedding", (("pillow", "cushion"), ("blanket", "throw"),
                     ("duvet", "comforter"), ("sheets",))))),
    ("beauty", ("hydrating", "natural", "matte", "gentle", "vegan"), 0.3, 0.3, (
        ("skincare", (("cream", "moisturizer", "lotion"), ("serum",),
                      ("cleanser", "facewash"), ("mask",))),
        ("makeup", (("lipstick",), ("mascara",), ("foundation",),
                    ("eyeliner",))),
        ("hair", (("shampoo",), ("conditioner",), ("hairdryer", "dryer"),
                  ("comb",))),
        ("fragrance", (("perfume", "scent"), ("cologne",), ("deodorant",),
                       ("mist",))))),
)
# The first brand of these roots is named by a word that is also a product
# noun of another root.
_BRAND_WORDS = {"electronics": "apple", "sports": "jaguar"}

_SYLLABLES = tuple(o + v for o in ("b", "d", "f", "g", "k", "l", "m", "n",
                                   "p", "r", "s", "t", "v", "z", "br", "kr",
                                   "pl", "st", "tr", "sh")
                   for v in ("a", "e", "i", "o", "u"))
_CODAS = ("", "n", "x", "r", "k", "l")
_TYPOS_PER_WORD = 2

_GENDERS = ("female", "male")
_AGES = ("18-24", "25-34", "35-44", "45-54", "55+")
_AGE_SHARE = np.array([0.2, 0.3, 0.25, 0.15, 0.1])
_POWERS = ("low", "medium", "high")
_POWER_GIVEN_AGE = np.array([[0.6, 0.3, 0.1], [0.35, 0.45, 0.2],
                             [0.25, 0.45, 0.3], [0.25, 0.45, 0.3],
                             [0.35, 0.45, 0.2]])
_PEAK_HOUR = np.array([22.0, 21.0, 20.0, 19.0, 11.0])
# Share of items at their brand's price tier; of titles with an adjective.
_BRAND_TIER_RATE = 0.6
_ADJECTIVE_RATE = 0.6
# Probability of a click on an examined result, by grade 0..3.
_GRADE_ATTRACTION = np.array([0.1, 0.2, 0.45, 0.7])
_TITLE_SLOTS = 5  # brand, colour, size, adjective, noun
_SESSION_GAP_S = 60

# Independent random streams, one per part of the world.
(_WORDS, _CATALOGUE, _USERS, _EVENTS, _QUERIES, _SEARCH, _JUDGMENTS,
 _POLYSEMY) = range(1, 9)


def _rng(seed: int, part: int) -> np.random.Generator:
  return np.random.default_rng([seed, part])


# ---------------------------------------------------------------------------
# Configuration.


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
  """Knobs of the synthetic world (see the module docstring for the story).

  Size: `num_items`, `num_users`, the tree `num_roots` x `mids_per_root` x
  `leaves_per_mid` (needs `num_items >= num_leaves`), `num_brands` and
  `num_shops` (each >= `num_roots`), `num_queries` (distinct query strings,
  an upper bound). `SyntheticConfig.scaled(num_items)` grows them together
  (1k to 1M+ items). Memory and time are linear in items + events +
  searches; no users x items or queries x items array is ever built.

  Behaviour: `num_interests` (None: one per mid category; interests are
  contiguous leaf groups), `max_interests_per_user`, `latent_dim`,
  `zipf_exponent` (item popularity ~ 1/rank^s), `mean_events_per_user`,
  `min_events_per_user`, `mean_session_length`, `session_focus`,
  `favourite_leaf_rate`, `price_affinity`, `noise_rate`
  (popular-but-irrelevant events), `purchase_rate`, `num_days`, `start_time`
  (midnight of day 0, seconds).

  Search: `mean_searches_per_user`, `results_per_search`, `result_relevance`
  (share of result slots drawn from the query intent's items),
  `position_bias`, `popularity_click_boost`, `typo_rate`, `synonym_rate`,
  `polysemous_search_rate` (share of the searches for a meaning of a
  polysemous word that type the bare word, e.g. "apple" for apples or for
  Apple phones; 0: the bare word is drawn like any other query row of its
  leaf), `recent_brand_click_boost` (a result whose brand the user browsed
  in the last `RECENT_BRAND_EVENTS` events before the search is that much
  more attractive: clicks carry a personal signal that the query does not,
  and that ground-truth relevance ignores; 0: none), `judged_per_query`,
  `judged_related`, `judged_random`.
  """

  seed: int = 0
  num_items: int = 2000
  num_users: int = 1000
  num_roots: int = 8
  mids_per_root: int = 4
  leaves_per_mid: int = 4
  num_brands: int = 100
  num_shops: int = 200
  num_interests: Optional[int] = None
  max_interests_per_user: int = 4
  latent_dim: int = 16
  zipf_exponent: float = 1.0
  mean_events_per_user: float = 30.0
  min_events_per_user: int = 2
  mean_session_length: float = 6.0
  session_focus: float = 0.6
  favourite_leaf_rate: float = 0.5
  price_affinity: float = 0.7
  noise_rate: float = 0.1
  purchase_rate: float = 0.1
  num_days: int = 60
  start_time: int = 1_600_041_600  # 2020-09-14 00:00 UTC
  num_queries: int = 2000
  mean_searches_per_user: float = 5.0
  results_per_search: int = 10
  result_relevance: float = 0.6
  position_bias: float = 1.0
  popularity_click_boost: float = 1.0
  typo_rate: float = 0.1
  synonym_rate: float = 0.3
  polysemous_search_rate: float = 0.0
  recent_brand_click_boost: float = 0.0
  judged_per_query: int = 30
  judged_related: int = 10
  judged_random: int = 10

  def __post_init__(self):
    minimum = dict(seed=0, num_items=1, num_users=1, num_roots=1,
                   mids_per_root=1, leaves_per_mid=1, num_brands=1,
                   num_shops=1, max_interests_per_user=1, latent_dim=1,
                   min_events_per_user=1, num_days=1, start_time=0,
                   num_queries=1, results_per_search=1, judged_per_query=0,
                   judged_related=0, judged_random=0)
    for name, low in minimum.items():
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"SyntheticConfig.{name} must be an int, got "
                         f"{value!r}")
      if value < low:
        raise ValueError(f"SyntheticConfig.{name} must be >= {low}, got "
                         f"{value}")
    for name in ("session_focus", "favourite_leaf_rate", "price_affinity",
                 "noise_rate", "purchase_rate", "result_relevance",
                 "typo_rate", "synonym_rate", "polysemous_search_rate"):
      value = getattr(self, name)
      if not 0.0 <= value <= 1.0:
        raise ValueError(f"SyntheticConfig.{name} is a probability, got "
                         f"{value}")
    if self.session_focus + self.noise_rate > 1.0:
      raise ValueError("SyntheticConfig: session_focus + noise_rate must be "
                       f"<= 1, got {self.session_focus + self.noise_rate}")
    for name in ("zipf_exponent", "mean_events_per_user",
                 "mean_searches_per_user", "position_bias",
                 "popularity_click_boost", "recent_brand_click_boost"):
      value = getattr(self, name)
      if not (np.isfinite(value) and value >= 0):
        raise ValueError(f"SyntheticConfig.{name} must be finite and >= 0, "
                         f"got {value}")
    if not self.mean_session_length >= 1.0:
      raise ValueError("SyntheticConfig.mean_session_length must be >= 1, "
                       f"got {self.mean_session_length}")
    if self.num_items < self.num_leaves:
      raise ValueError(
          f"SyntheticConfig: num_items ({self.num_items}) must be >= the "
          f"number of leaf categories ({self.num_leaves} = num_roots x "
          "mids_per_root x leaves_per_mid) so that no leaf is empty")
    for name in ("num_brands", "num_shops"):
      if getattr(self, name) < self.num_roots:
        raise ValueError(f"SyntheticConfig.{name} ({getattr(self, name)}) "
                         f"must be >= num_roots ({self.num_roots})")
    if self.num_interests is not None and not (
        1 <= self.num_interests <= self.num_leaves):
      raise ValueError(f"SyntheticConfig.num_interests must be in "
                       f"[1, {self.num_leaves}], got {self.num_interests}")

  @property
  def num_mids(self) -> int:
    return self.num_roots * self.mids_per_root

  @property
  def num_leaves(self) -> int:
    return self.num_mids * self.leaves_per_mid

  @property
  def interests(self) -> int:
    """The number of latent interests (one per mid category by default)."""
    return self.num_interests or self.num_mids

  @classmethod
  def scaled(cls, num_items: int, num_users: Optional[int] = None,
             seed: int = 0, **overrides) -> "SyntheticConfig":
    """A configuration whose tree, brands, shops, queries and users grow with
    `num_items`: ~300 items per leaf (at least 4 leaves per mid), one brand
    per 200 items, one shop per 100, one query per 50 (at least the
    defaults), one user per 100 items (at least 1,000) unless given."""
    defaults = cls()
    values = dict(
        seed=seed, num_items=num_items,
        num_users=num_users or max(defaults.num_users, num_items // 100),
        leaves_per_mid=max(defaults.leaves_per_mid, math.ceil(
            num_items / (defaults.num_mids * 300))),
        num_brands=max(defaults.num_brands, num_items // 200),
        num_shops=max(defaults.num_shops, num_items // 100),
        num_queries=max(defaults.num_queries, num_items // 50))
    values.update(overrides)
    return cls(**values)


# ---------------------------------------------------------------------------
# The world.


@dataclasses.dataclass(repr=False, eq=False)
class SyntheticWorld:
  """Every array of a generated world. Word ids index `words`; category,
  brand, shop, item, user and query ids are contiguous from 0; -1 means
  "none" (no colour, an unmentioned intent field, padding).

  Taxonomy and words:
    words: object `[W]`: the `num_title_words` clean words, then typo variants.
    typo_of: int32 `[W]`: the clean word a typo variant misspells, else -1;
      typo_variants: int32 `[num_title_words, 2]` the reverse (-1 pad).
    root_names, mid_names, leaf_names: object; mid and leaf names are paths
      ("electronics/computers/mouse").
    mid_root, leaf_mid, leaf_interest: int32 parents / interest of nodes.
    leaf_noun: int32 `[L]` word id; leaf_synonyms: int32 `[L, S]` (-1 pad).
    root_adjectives (word ids, -1 pad), root_colour_rate, root_size_rate.
    brand_word, brand_root, brand_tier; shop_root; colour_words, size_words.
  Items: item_leaf, item_brand, item_shop, item_colour (index into
    `colour_words` or -1), item_size, item_adjective (word id or -1),
    item_tier (0 low, 1 medium, 2 high), item_price float32,
    item_popularity float64 (sums to 1), item_latent float32 `[N, D]`,
    item_tokens int32 `[N, 5]` title word ids, left-aligned, -1 padded.
  Users: user_gender, user_age, user_power, user_peak_hour;
    user_interests / user_favourite_leaf int32 `[U, K]` (-1 pad),
    user_interest_weights float32 `[U, K]`.
  Browsing log, sorted by (user, time): event_user, event_item, event_time
    (int64 s), event_hour, event_session, event_position, event_purchase;
    per session: session_user, session_interest, session_leaf.
  Queries: query_strings object `[Q]`, query_tokens int32 `[Q, 5]`; query
    rows (the generated intents, several per query when strings coincide):
    intent_query, intent_leaf, intent_brand, intent_colour, intent_size,
    intent_item (the seed item).
  Search log: search_user, search_time, search_intent (the row the user
    meant), search_query; clicks: click_search, click_item, click_position,
    click_time, click_grade (relevance under the user's own intent).
  Judgments: judged_query, judged_item, judged_grade (0..3).
  """

  config: SyntheticConfig
  words: np.ndarray
  num_title_words: int
  typo_of: np.ndarray
  typo_variants: np.ndarray
  root_names: np.ndarray
  mid_names: np.ndarray
  mid_root: np.ndarray
  leaf_names: np.ndarray
  leaf_mid: np.ndarray
  leaf_noun: np.ndarray
  leaf_synonyms: np.ndarray
  leaf_interest: np.ndarray
  root_adjectives: np.ndarray
  root_colour_rate: np.ndarray
  root_size_rate: np.ndarray
  brand_word: np.ndarray
  brand_root: np.ndarray
  brand_tier: np.ndarray
  shop_root: np.ndarray
  colour_words: np.ndarray
  size_words: np.ndarray
  item_leaf: np.ndarray
  item_brand: np.ndarray
  item_shop: np.ndarray
  item_colour: np.ndarray
  item_size: np.ndarray
  item_adjective: np.ndarray
  item_tier: np.ndarray
  item_price: np.ndarray
  item_popularity: np.ndarray
  item_latent: np.ndarray
  item_tokens: np.ndarray
  user_gender: np.ndarray
  user_age: np.ndarray
  user_power: np.ndarray
  user_peak_hour: np.ndarray
  user_interests: np.ndarray
  user_interest_weights: np.ndarray
  user_favourite_leaf: np.ndarray
  event_user: np.ndarray
  event_item: np.ndarray
  event_time: np.ndarray
  event_hour: np.ndarray
  event_session: np.ndarray
  event_position: np.ndarray
  event_purchase: np.ndarray
  session_user: np.ndarray
  session_interest: np.ndarray
  session_leaf: np.ndarray
  query_strings: np.ndarray
  query_tokens: np.ndarray
  intent_query: np.ndarray
  intent_leaf: np.ndarray
  intent_brand: np.ndarray
  intent_colour: np.ndarray
  intent_size: np.ndarray
  intent_item: np.ndarray
  search_user: np.ndarray
  search_time: np.ndarray
  search_intent: np.ndarray
  search_query: np.ndarray
  click_search: np.ndarray
  click_item: np.ndarray
  click_position: np.ndarray
  click_time: np.ndarray
  click_grade: np.ndarray
  judged_query: np.ndarray
  judged_item: np.ndarray
  judged_grade: np.ndarray

  def __repr__(self) -> str:
    return (f"SyntheticWorld(seed={self.config.seed}, items={self.num_items}, "
            f"users={self.num_users}, events={len(self.event_user)}, "
            f"queries={self.num_queries}, searches={len(self.search_user)}, "
            f"clicks={len(self.click_item)}, "
            f"judgments={len(self.judged_grade)})")

  @property
  def num_items(self) -> int:
    return len(self.item_leaf)

  @property
  def num_users(self) -> int:
    return len(self.user_gender)

  @property
  def num_queries(self) -> int:
    return len(self.query_strings)

  @property
  def item_mid(self) -> np.ndarray:
    return self.leaf_mid[self.item_leaf]

  @property
  def item_root(self) -> np.ndarray:
    return self.mid_root[self.item_mid]

  @property
  def query_has_typo(self) -> np.ndarray:
    """bool `[Q]`: the query contains a misspelt word."""
    return (self.query_tokens >= self.num_title_words).any(axis=1)

  @property
  def query_has_synonym(self) -> np.ndarray:
    """bool `[Q]`: the query names its product by a synonym of the noun."""
    synonyms = self.leaf_synonyms[self.leaf_synonyms >= 0]
    return np.isin(self.query_tokens, synonyms).any(axis=1)

  def polysemous_words(self) -> Dict[str, Tuple[str, ...]]:
    """Surface words naming products (leaf nouns or brands) in two or more
    root categories -> the names of those roots."""
    words, _, _, roots = _word_meanings(self)
    return {self.words[w]: tuple(self.root_names[np.unique(roots[words == w])])
            for w in np.unique(words)}

  def item_titles(self) -> np.ndarray:
    """object `[N]`: readable titles, e.g. "zentek red wireless mouse"."""
    return _render(self.words, self.item_tokens)

  def relevance(self, query, item) -> np.ndarray:
    """Graded relevance (int8 0..3) of broadcast (query, item) id pairs: the
    maximum over the query's intents (see the module docstring)."""
    return _relevance(self, query, item)

  # -- conversions ----------------------------------------------------------

  def _item_features(self) -> Dict[str, np.ndarray]:
    return {
        "top_category": self.item_root.astype(np.int32),
        "mid_category": self.item_mid.astype(np.int32),
        "leaf_category": self.item_leaf,
        "brand": self.item_brand,
        "shop": self.item_shop,
        "price_bucket": self.item_tier.astype(np.int32),
        "colour": self.item_colour + 1,
        "size": self.item_size + 1,
        "title": self.item_tokens,
    }

  def _feature_vocabularies(self) -> Dict[str, Vocabulary]:
    return {
        "top_category": Vocabulary(self.root_names, "top_category"),
        "mid_category": Vocabulary(self.mid_names, "mid_category"),
        "leaf_category": Vocabulary(self.leaf_names, "leaf_category"),
        "brand": Vocabulary(self.words[self.brand_word], "brand"),
        "shop": Vocabulary([f"shop_{s}" for s in range(len(self.shop_root))],
                           "shop"),
        "price_bucket": Vocabulary(_POWERS, "price_bucket"),
        "colour": Vocabulary(("none",) + tuple(self.words[self.colour_words]),
                             "colour"),
        "size": Vocabulary(("none",) + tuple(self.words[self.size_words]),
                           "size"),
        "title": Vocabulary(self.words[:self.num_title_words], "title"),
        "gender": Vocabulary(_GENDERS, "gender"),
        "age": Vocabulary(_AGES, "age"),
        "power": Vocabulary(_POWERS, "power"),
    }

  def to_rec_dataset(self) -> RecDataset:
    """The browsing log as a `RecDataset` named "synthetic".

    Interactions are the click and purchase events with timestamps (sorted
    by user, time). User features: gender, age, power; item features:
    top/mid/leaf_category, brand, shop, price_bucket (the item's price tier
    within its category), colour and size (0 = none), title (`[N, 5]` word
    ids, -1 padded); every one has a vocabulary.
    """
    return RecDataset(
        name="synthetic",
        interactions=Interactions(self.event_user, self.event_item,
                                  self.event_time),
        users=Vocabulary(np.arange(self.num_users), "user"),
        items=Vocabulary(np.arange(self.num_items), "item"),
        user_features={"gender": self.user_gender.astype(np.int32),
                       "age": self.user_age.astype(np.int32),
                       "power": self.user_power.astype(np.int32)},
        item_features=self._item_features(),
        feature_vocabularies=self._feature_vocabularies(),
        item_titles=self.item_titles())

  def to_search_dataset(self) -> SearchDataset:
    """The queries, judgments and search clicks as a `SearchDataset`.

    Interactions are the clicks (user, item, time, raw query string).
    `item_text["category"]` is the readable category path. Query features
    (int32 `[Q]`, from the query's first intent; -1 = not mentioned):
    intent_top_category, intent_mid_category, intent_leaf_category,
    intent_brand, intent_colour and intent_size (indices of the item feature
    vocabularies), num_intents (> 1: an ambiguous, e.g. polysemous, query),
    has_typo, has_synonym.
    """
    first = np.unique(self.intent_query, return_index=True)[1]
    leaf = self.intent_leaf[first]
    mid = np.where(leaf >= 0, self.leaf_mid[leaf], -1)
    _, counts, _ = _distinct_intents(self)
    query_features = {
        "intent_top_category": np.where(mid >= 0, self.mid_root[mid], -1),
        "intent_mid_category": mid,
        "intent_leaf_category": leaf,
        "intent_brand": self.intent_brand[first],
        "intent_colour": np.where(self.intent_colour[first] >= 0,
                                  self.intent_colour[first] + 1, -1),
        "intent_size": np.where(self.intent_size[first] >= 0,
                                self.intent_size[first] + 1, -1),
        "num_intents": counts,
        "has_typo": self.query_has_typo,
        "has_synonym": self.query_has_synonym,
    }
    clicks_user = self.search_user[self.click_search]
    return SearchDataset(
        name="synthetic",
        queries=Vocabulary(self.query_strings, "query"),
        items=Vocabulary(np.arange(self.num_items), "item"),
        item_titles=self.item_titles(),
        item_text={"category": np.char.replace(
            self.leaf_names.astype(str), "/", " > ").astype(object)[
                self.item_leaf]},
        item_features=self._item_features(),
        feature_vocabularies=self._feature_vocabularies(),
        query_features={k: np.asarray(v, dtype=np.int32)
                        for k, v in query_features.items()},
        judgments=Judgments(self.judged_query, self.judged_item,
                            self.judged_grade.astype(np.float32)),
        interactions=Interactions(
            clicks_user, self.click_item, self.click_time,
            query=self.query_strings[self.search_query[self.click_search]]),
        users=Vocabulary(np.arange(self.num_users), "user"))


def generate(config: SyntheticConfig) -> SyntheticWorld:
  """Generates the world of `config` (deterministic in `config`)."""
  world = _Draft(config=config, **_taxonomy(config))
  _items(world)
  lb_index = _PopularityIndex(
      world.item_leaf.astype(np.int64) * config.num_brands + world.item_brand,
      world.item_popularity)
  brand_index = _PopularityIndex(world.item_brand, world.item_popularity)
  _users(world)
  _events(world)
  _queries(world, lb_index, brand_index)
  _searches(world, lb_index, brand_index)
  _judgments(world, lb_index, brand_index)
  return SyntheticWorld(**vars(world))


# A world under construction: the generation stages set `SyntheticWorld`'s
# attributes on it one part at a time.
_Draft = types.SimpleNamespace
# What the shared helpers read: a finished or a draft world.
_World = Union[SyntheticWorld, _Draft]


# ---------------------------------------------------------------------------
# Sampling helpers.


class _PopularityIndex:
  """Items sorted by an integer key, with cumulative popularity: a
  popularity-weighted draw inside any key range costs O(log n)."""

  def __init__(self, key: np.ndarray, popularity: np.ndarray):
    self.order = np.argsort(key, kind="stable")
    self.key = key[self.order]
    self.cum = np.cumsum(popularity[self.order])

  def span(self, lo, hi) -> Tuple[np.ndarray, np.ndarray]:
    """Positions `[start, end)` of the items with key in `[lo, hi)`."""
    return (np.searchsorted(self.key, lo, side="left"),
            np.searchsorted(self.key, hi, side="left"))

  def draw(self, start: np.ndarray, end: np.ndarray,
           u: np.ndarray) -> np.ndarray:
    """One popularity-weighted item per non-empty span, `u` ~ U[0, 1)."""
    base = np.where(start > 0, self.cum[np.maximum(start - 1, 0)], 0.0)
    target = base + u * (self.cum[end - 1] - base)
    pos = np.searchsorted(self.cum, target, side="right")
    return self.order[np.clip(pos, start, end - 1)]


def _stratified(start: np.ndarray, end: np.ndarray, cap: int,
                rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
  """Up to `cap` distinct positions per span, one per equal stratum (all of
  a span no longer than `cap`). Returns (span index, position)."""
  size = end - start
  take = np.minimum(size, cap)
  owner = np.repeat(np.arange(len(start)), take)
  j = np.arange(len(owner)) - np.repeat(np.cumsum(take) - take, take)
  u = rng.random(len(owner))
  pos = start[owner] + ((j + u) * size[owner] // take[owner]).astype(np.int64)
  return owner, pos


def _pick_slots(weights: np.ndarray, rows: np.ndarray,
                rng: np.random.Generator) -> np.ndarray:
  """A slot per row, drawn by the (zero-padded) row weights."""
  w = weights[rows]
  slot = (rng.random(len(rows))[:, None] > np.cumsum(w, axis=1)).sum(axis=1)
  return np.minimum(slot, (w > 0).sum(axis=1) - 1)


def _categorical(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """One draw per row of a `[n, C]` probability table."""
  u = rng.random(len(probs))[:, None]
  return np.minimum((u > np.cumsum(probs, axis=1)).sum(axis=1),
                    probs.shape[1] - 1)


def _zipf_rank(n: np.ndarray, u: np.ndarray) -> np.ndarray:
  """A rank in `[0, n)` with P(rank) roughly proportional to 1/(rank+1)."""
  return np.minimum(np.floor((n + 1.0) ** u).astype(np.int64) - 1, n - 1)


def _positions(n: int, list_size: int, bias: float,
               rng: np.random.Generator) -> np.ndarray:
  """Result-list positions with P(pos) ~ 1/(pos+1)^bias."""
  w = np.cumsum((np.arange(list_size) + 1.0) ** -bias)
  return np.minimum(np.searchsorted(w / w[-1], rng.random(n), side="right"),
                    list_size - 1).astype(np.int16)


def _pack(tokens: np.ndarray) -> np.ndarray:
  """Moves the non-negative entries of each row to its front, in order."""
  order = np.argsort(tokens < 0, axis=1, kind="stable")
  return np.take_along_axis(tokens, order, axis=1).astype(np.int32)


def _render(words: np.ndarray, tokens: np.ndarray) -> np.ndarray:
  """Space-joined words of left-aligned, -1 padded token rows."""
  spaced = np.append(" " + words.astype(object), "").astype(object)
  text = words.astype(object)[tokens[:, 0]]
  for column in tokens[:, 1:].T:
    text = text + spaced[column]
  return text


# ---------------------------------------------------------------------------
# 1. Taxonomy and words.


def _pseudo_words(rng: np.random.Generator,
                  reserved: Iterable[str]) -> Iterator[str]:
  """Distinct pronounceable pseudo-words (2-3 syllables and a coda) outside
  `reserved`, drawn in batches."""
  seen = set(reserved)
  while True:
    lengths = rng.integers(2, 4, 256)
    syllables = rng.integers(0, len(_SYLLABLES), (256, 3))
    codas = rng.integers(0, len(_CODAS), 256)
    for n, syl, coda in zip(lengths, syllables, codas):
      word = "".join(_SYLLABLES[s] for s in syl[:n]) + _CODAS[coda]
      if word not in seen:
        seen.add(word)
        yield word


def _typo_variants(word: str, rng: np.random.Generator) -> Tuple[str, ...]:
  """`_TYPOS_PER_WORD` misspellings of `word` (deletion, adjacent
  transposition, substitution or doubling of one character)."""
  out = []
  for op, at in zip(rng.integers(0, 4, _TYPOS_PER_WORD),
                    rng.integers(1, len(word) - 1, _TYPOS_PER_WORD)):
    if op == 0:
      typo = word[:at] + word[at + 1:]
    elif op == 1:
      typo = word[:at] + word[at + 1] + word[at] + word[at + 2:]
    elif op == 2:
      typo = word[:at] + "qwertyuiopasdfghjklzxcvbnm"[
          rng.integers(0, 26)] + word[at + 1:]
    else:
      typo = word[:at] + word[at] + word[at:]
    out.append(typo)
  return tuple(out)


def _taxonomy(config: SyntheticConfig) -> dict:
  """The category tree, brands, shops and word vocabulary."""
  rng = _rng(config.seed, _WORDS)
  bank = set(_COLOURS) | set(_SIZES) | set(_GENERIC_ADJECTIVES)
  for root, adjectives, _, _, mids in _TAXONOMY:
    bank |= {root, *adjectives}
    for mid, leaves in mids:
      bank.add(mid)
      bank |= {w for leaf in leaves for w in leaf}
  pseudo = _pseudo_words(rng, bank)

  root_names, root_adjectives, colour_rate, size_rate = [], [], [], []
  mid_names, leaf_names, leaf_words = [], [], []
  for r in range(config.num_roots):
    if r < len(_TAXONOMY):
      root, adjectives, c_rate, s_rate, mids = _TAXONOMY[r]
    else:
      root, adjectives, c_rate, s_rate, mids = (
          next(pseudo), _GENERIC_ADJECTIVES, 0.5, 0.3, ())
    root_names.append(root)
    root_adjectives.append(adjectives)
    colour_rate.append(c_rate)
    size_rate.append(s_rate)
    for m in range(config.mids_per_root):
      mid, leaves = mids[m] if m < len(mids) else (next(pseudo), ())
      mid_names.append(f"{root}/{mid}")
      for leaf in range(config.leaves_per_mid):
        nouns = leaves[leaf] if leaf < len(leaves) else (next(pseudo),
                                                         next(pseudo))
        leaf_names.append(f"{root}/{mid}/{nouns[0]}")
        leaf_words.append(nouns)

  brand_root = np.arange(config.num_brands) % config.num_roots
  brand_names = [
      _BRAND_WORDS[root_names[b]] if b < config.num_roots
      and root_names[b] in _BRAND_WORDS else next(pseudo)
      for b in range(config.num_brands)]

  clean = list(dict.fromkeys(
      list(_COLOURS) + list(_SIZES)
      + [a for adj in root_adjectives for a in adj]
      + [nouns[0] for nouns in leaf_words]
      + [s for nouns in leaf_words for s in nouns[1:]] + brand_names))
  word_id = {w: i for i, w in enumerate(clean)}
  typos, typo_of, typo_variants = [], [], []
  taken = set(clean)
  for i, word in enumerate(clean):
    ids = []
    for typo in _typo_variants(word, rng) if len(word) >= 4 else ():
      if typo not in taken:
        taken.add(typo)
        ids.append(len(clean) + len(typos))
        typos.append(typo)
        typo_of.append(i)
    typo_variants.append(ids + [-1] * (_TYPOS_PER_WORD - len(ids)))

  max_syn = max(len(nouns) - 1 for nouns in leaf_words)
  synonyms = np.full((len(leaf_words), max(max_syn, 1)), -1, dtype=np.int32)
  for leaf, nouns in enumerate(leaf_words):
    synonyms[leaf, :len(nouns) - 1] = [word_id[s] for s in nouns[1:]]
  max_adj = max(len(a) for a in root_adjectives)
  adjectives = np.full((config.num_roots, max_adj), -1, dtype=np.int32)
  for r, adj in enumerate(root_adjectives):
    adjectives[r, :len(adj)] = [word_id[a] for a in adj]
  num_leaves = config.num_leaves
  return dict(
      words=np.asarray(clean + typos, dtype=object),
      num_title_words=len(clean),
      typo_of=np.asarray([-1] * len(clean) + typo_of, dtype=np.int32),
      typo_variants=np.asarray(typo_variants, dtype=np.int32),
      root_names=np.asarray(root_names, dtype=object),
      mid_names=np.asarray(mid_names, dtype=object),
      mid_root=(np.arange(config.num_mids) // config.mids_per_root).astype(
          np.int32),
      leaf_names=np.asarray(leaf_names, dtype=object),
      leaf_mid=(np.arange(num_leaves) // config.leaves_per_mid).astype(
          np.int32),
      leaf_noun=np.asarray([word_id[n[0]] for n in leaf_words],
                           dtype=np.int32),
      leaf_synonyms=synonyms,
      leaf_interest=(np.arange(num_leaves) * config.interests
                     // num_leaves).astype(np.int32),
      root_adjectives=adjectives,
      root_colour_rate=np.asarray(colour_rate),
      root_size_rate=np.asarray(size_rate),
      brand_word=np.asarray([word_id[b] for b in brand_names],
                            dtype=np.int32),
      brand_root=brand_root.astype(np.int32),
      brand_tier=rng.integers(0, 3, config.num_brands).astype(np.int8),
      shop_root=(np.arange(config.num_shops) % config.num_roots).astype(
          np.int32),
      colour_words=np.asarray([word_id[c] for c in _COLOURS], dtype=np.int32),
      size_words=np.asarray([word_id[s] for s in _SIZES], dtype=np.int32))


def _word_meanings(world: _World
                  ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """The meanings of the polysemous words: (word, leaf or -1, brand or -1,
  root) per meaning, a meaning being a leaf noun or the name of a brand that
  has items."""
  num_leaves = len(world.leaf_noun)
  brands = np.flatnonzero(np.bincount(world.item_brand,
                                      minlength=len(world.brand_word)))
  words = np.concatenate([world.leaf_noun, world.brand_word[brands]])
  roots = np.concatenate([world.mid_root[world.leaf_mid],
                          world.brand_root[brands]])
  leaf = np.concatenate([np.arange(num_leaves), np.full(len(brands), -1)])
  brand = np.concatenate([np.full(num_leaves, -1), brands])
  pairs = np.unique(np.stack([words, roots], axis=1), axis=0)
  poly_words, num_roots = np.unique(pairs[:, 0], return_counts=True)
  keep = np.isin(words, poly_words[num_roots > 1])
  return words[keep], leaf[keep], brand[keep], roots[keep]


# ---------------------------------------------------------------------------
# 2. Items.


def _items(world: _Draft) -> None:
  """Sets the `item_*` arrays (story step 2)."""
  config = world.config
  rng = _rng(config.seed, _CATALOGUE)
  n, num_leaves = config.num_items, config.num_leaves
  leaf_weight = rng.lognormal(0.0, 0.5, num_leaves)
  leaf = rng.permutation(np.concatenate([
      np.arange(num_leaves),
      rng.choice(num_leaves, n - num_leaves, p=leaf_weight / leaf_weight.sum())
  ])).astype(np.int32)
  root = world.mid_root[world.leaf_mid[leaf]]
  num_roots = config.num_roots
  # Brand / shop j of root r is r + num_roots * j.
  brands_in_root = (config.num_brands - root + num_roots - 1) // num_roots
  brand = root + num_roots * _zipf_rank(brands_in_root, rng.random(n))
  shops_in_root = (config.num_shops - root + num_roots - 1) // num_roots
  shop = root + num_roots * _zipf_rank(shops_in_root, rng.random(n))
  tier = np.where(rng.random(n) < _BRAND_TIER_RATE, world.brand_tier[brand],
                  rng.integers(0, 3, n)).astype(np.int8)
  colour = np.where(rng.random(n) < world.root_colour_rate[root],
                    rng.integers(0, len(_COLOURS), n), -1).astype(np.int32)
  size = np.where(rng.random(n) < world.root_size_rate[root],
                  rng.integers(0, len(_SIZES), n), -1).astype(np.int32)
  num_adj = (world.root_adjectives >= 0).sum(axis=1)[root]
  adjective = np.where(
      rng.random(n) < _ADJECTIVE_RATE,
      world.root_adjectives[root, (rng.random(n) * num_adj).astype(np.int64)],
      -1).astype(np.int32)
  leaf_log_price = rng.normal(3.0, 1.0, num_leaves)
  price = np.round(np.exp(leaf_log_price[leaf] + 0.5 * (tier - 1.0)
                          + 0.2 * rng.standard_normal(n)), 2)
  weight = (rng.permutation(n) + 1.0) ** -config.zipf_exponent
  d = config.latent_dim
  centroids = rng.standard_normal((config.interests, d))
  leaf_offset = rng.standard_normal((num_leaves, d))
  tier_offset = rng.standard_normal((3, d))
  latent = (centroids[world.leaf_interest[leaf]] + 0.5 * leaf_offset[leaf]
            + 0.25 * tier_offset[tier]).astype(np.float32)
  latent += 0.2 * rng.standard_normal((n, d), dtype=np.float32)
  latent /= np.float32(np.sqrt(d))
  tokens = np.stack([
      world.brand_word[brand],
      np.where(colour >= 0, world.colour_words[colour], -1),
      np.where(size >= 0, world.size_words[size], -1),
      adjective,
      world.leaf_noun[leaf]], axis=1)
  world.item_leaf = leaf
  world.item_brand = brand.astype(np.int32)
  world.item_shop = shop.astype(np.int32)
  world.item_colour = colour
  world.item_size = size
  world.item_adjective = adjective
  world.item_tier = tier
  world.item_price = price.astype(np.float32)
  world.item_popularity = weight / weight.sum()
  world.item_latent = latent
  world.item_tokens = _pack(tokens)


# ---------------------------------------------------------------------------
# 3. Users.


def _interest_leaves(world: _Draft) -> Tuple[np.ndarray, np.ndarray]:
  """(first leaf, number of leaves) of every interest."""
  counts = np.bincount(world.leaf_interest, minlength=world.config.interests)
  return np.cumsum(counts) - counts, counts


def _users(world: _Draft) -> None:
  """Sets the `user_*` arrays (story step 3)."""
  config = world.config
  rng = _rng(config.seed, _USERS)
  u, num_interests = config.num_users, config.interests
  gender = rng.integers(0, 2, u)
  age = _categorical(np.broadcast_to(_AGE_SHARE, (u, len(_AGES))), rng)
  power = _categorical(_POWER_GIVEN_AGE[age], rng)
  group_logits = rng.normal(0.0, 1.5, (len(_GENDERS) * len(_AGES),
                                       num_interests)).astype(np.float32)
  gumbel = -np.log(-np.log(rng.random((u, num_interests), dtype=np.float32)
                           + np.float32(1e-12)))
  scores = group_logits[gender * len(_AGES) + age] + gumbel
  k = min(config.max_interests_per_user, num_interests)
  top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
  valid = np.arange(k) < rng.integers(1, k + 1, u)[:, None]
  weights = rng.gamma(1.0, size=(u, k)) * valid
  first, count = _interest_leaves(world)
  favourite = first[top] + (rng.random((u, k)) * count[top]).astype(np.int64)
  world.user_gender = gender.astype(np.int8)
  world.user_age = age.astype(np.int8)
  world.user_power = power.astype(np.int8)
  world.user_peak_hour = (_PEAK_HOUR[age] + rng.normal(0.0, 2.0, u)).astype(
      np.float32) % 24
  world.user_interests = np.where(valid, top, -1).astype(np.int32)
  world.user_interest_weights = (
      weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)
  world.user_favourite_leaf = np.where(valid, favourite, -1).astype(np.int32)


def _leaf_in_interest(world: _Draft, index: _PopularityIndex,
                      stride: int, users: np.ndarray,
                      rng: np.random.Generator
                     ) -> Tuple[np.ndarray, np.ndarray]:
  """(interest, leaf) per user row: an interest by the user's weights, then
  its favourite leaf (`favourite_leaf_rate`) or the leaf of a popular item of
  the interest. `index` is keyed by `leaf * stride + sub-key`."""
  slot = _pick_slots(world.user_interest_weights, users, rng)
  interest = world.user_interests[users, slot]
  first, count = _interest_leaves(world)
  start, end = index.span(first[interest] * stride,
                          (first[interest] + count[interest]) * stride)
  drawn = world.item_leaf[index.draw(start, end, rng.random(len(users)))]
  leaf = np.where(rng.random(len(users)) < world.config.favourite_leaf_rate,
                  world.user_favourite_leaf[users, slot], drawn)
  return interest, leaf


# ---------------------------------------------------------------------------
# 4. Browsing sessions.


def _events(world: _Draft) -> None:
  """Sets the browsing log `event_*` and `session_*` (story step 4)."""
  config = world.config
  rng = _rng(config.seed, _EVENTS)
  index = _PopularityIndex(world.item_leaf.astype(np.int64) * 3
                           + world.item_tier, world.item_popularity)
  per_user = np.maximum(config.min_events_per_user, rng.poisson(
      rng.gamma(2.0, config.mean_events_per_user / 2.0, config.num_users)))
  user = np.repeat(np.arange(config.num_users), per_user)
  e = len(user)
  user_start = np.cumsum(per_user) - per_user
  new = rng.random(e) < 1.0 / config.mean_session_length
  new[user_start] = True
  session = np.cumsum(new) - 1
  session_user = user[new]
  interest, session_leaf = _leaf_in_interest(world, index, 3, session_user,
                                             rng)

  # Items: noise, anchor leaf (at a preferred tier when it has one), interest.
  mode = rng.random(e)
  noise = mode < config.noise_rate
  anchor = ~noise & (mode < config.noise_rate + config.session_focus)
  tier = np.where(rng.random(e) < config.price_affinity,
                  world.user_power[user], rng.integers(0, 3, e))
  leaf = session_leaf[session].astype(np.int64)
  tier_start, tier_end = index.span(leaf * 3 + tier, leaf * 3 + tier + 1)
  leaf_start, leaf_end = index.span(leaf * 3, leaf * 3 + 3)
  has_tier = tier_end > tier_start
  first, count = _interest_leaves(world)
  ev_interest = interest[session]
  int_start, int_end = index.span(first[ev_interest] * 3,
                                  (first[ev_interest] + count[ev_interest]) * 3)
  start = np.where(noise, 0, np.where(
      anchor, np.where(has_tier, tier_start, leaf_start), int_start))
  end = np.where(noise, len(index.key), np.where(
      anchor, np.where(has_tier, tier_end, leaf_end), int_end))
  item = index.draw(start, end, rng.random(e))

  position = _positions(e, config.results_per_search, config.position_bias,
                        rng)
  p_buy = config.purchase_rate * np.where(
      world.item_tier[item] == world.user_power[user], 1.5, 0.5)
  purchase = rng.random(e) < np.where(noise, 0.2 * p_buy, p_buy)

  # Time: sessions start around the user's peak hour on random days, in
  # order, never overlapping; events are seconds to minutes apart.
  num_sessions = len(session_user)
  hour = (world.user_peak_hour[session_user].astype(np.float64)
          + rng.normal(0.0, 3.0, num_sessions)) % 24
  begin = (rng.integers(0, config.num_days, num_sessions) * 86400
           + (hour * 3600).astype(np.int64))
  begin = begin[np.lexsort((begin, session_user))]
  gap = np.where(new, 0, 1 + rng.exponential(40.0, e).astype(np.int64))
  offset = np.cumsum(gap)
  offset -= offset[np.flatnonzero(new)][session]
  duration = offset[np.append(np.flatnonzero(new)[1:] - 1, e - 1)]
  same_user = session_user[1:] == session_user[:-1]
  while True:
    clash = same_user & (begin[1:] < begin[:-1] + duration[:-1]
                         + _SESSION_GAP_S)
    if not clash.any():
      break
    later = np.flatnonzero(clash) + 1
    begin[later] = begin[later - 1] + duration[later - 1] + _SESSION_GAP_S
  clock = begin[session] + offset
  world.event_user = user.astype(np.int32)
  world.event_item = item.astype(np.int32)
  world.event_time = config.start_time + clock
  world.event_hour = ((clock // 3600) % 24).astype(np.int8)
  world.event_session = session.astype(np.int32)
  world.event_position = position
  world.event_purchase = purchase
  world.session_user = session_user.astype(np.int32)
  world.session_interest = interest.astype(np.int32)
  world.session_leaf = session_leaf.astype(np.int32)


# ---------------------------------------------------------------------------
# 5. Queries.

# Field rates of a generated query row: brand alone; brand, colour, size and
# adjective beside the noun.
_BRAND_ONLY_RATE = 0.1
_QUERY_BRAND_RATE = 0.35
_QUERY_COLOUR_RATE = 0.3
_QUERY_SIZE_RATE = 0.15
_QUERY_ADJECTIVE_RATE = 0.15
# Rows generated per requested distinct query (duplicates merge).
_QUERY_OVERSAMPLING = 3


def _queries(world: _Draft, lb_index: _PopularityIndex,
             brand_index: _PopularityIndex) -> None:
  """Sets `query_*` and the query rows `intent_*` (story step 5)."""
  config = world.config
  rng = _rng(config.seed, _QUERIES)
  num_brands = config.num_brands
  # One noun-only or brand-only row per meaning of each polysemous word.
  _, p_leaf, p_brand, _ = _word_meanings(world)
  is_leaf = p_leaf >= 0
  u = rng.random(len(p_leaf))
  lb_start, lb_end = lb_index.span(np.where(is_leaf, p_leaf * num_brands, 0),
                                   (p_leaf + 1) * num_brands)
  br_start, br_end = brand_index.span(np.maximum(p_brand, 0), p_brand + 1)
  p_item = np.where(
      is_leaf,
      lb_index.draw(np.where(is_leaf, lb_start, 0),
                    np.where(is_leaf, lb_end, config.num_items), u),
      brand_index.draw(np.where(is_leaf, 0, br_start),
                       np.where(is_leaf, config.num_items, br_end), u))
  p_slots = np.full((len(p_leaf), _TITLE_SLOTS), -1, dtype=np.int64)
  p_slots[:, 0] = np.where(is_leaf, -1, world.brand_word[p_brand])
  p_slots[:, 4] = np.where(is_leaf, world.leaf_noun[p_leaf], -1)

  # Rows rendered from popularity-drawn seed items.
  m = _QUERY_OVERSAMPLING * config.num_queries
  item = lb_index.draw(np.zeros(m, dtype=np.int64),
                       np.full(m, config.num_items), rng.random(m))
  leaf = world.item_leaf[item]
  brand_only = rng.random(m) < _BRAND_ONLY_RATE
  with_brand = brand_only | (rng.random(m) < _QUERY_BRAND_RATE)
  with_colour = ~brand_only & (rng.random(m) < _QUERY_COLOUR_RATE) & (
      world.item_colour[item] >= 0)
  with_size = ~brand_only & (rng.random(m) < _QUERY_SIZE_RATE) & (
      world.item_size[item] >= 0)
  with_adjective = ~brand_only & (rng.random(m) < _QUERY_ADJECTIVE_RATE) & (
      world.item_adjective[item] >= 0)
  num_synonyms = (world.leaf_synonyms >= 0).sum(axis=1)[leaf]
  synonym = world.leaf_synonyms[leaf, (rng.random(m) * num_synonyms).astype(
      np.int64)]
  use_synonym = ~brand_only & (rng.random(m) < config.synonym_rate) & (
      num_synonyms > 0)
  slots = np.stack([
      np.where(with_brand, world.brand_word[world.item_brand[item]], -1),
      np.where(with_colour, world.colour_words[world.item_colour[item]], -1),
      np.where(with_size, world.size_words[world.item_size[item]], -1),
      np.where(with_adjective, world.item_adjective[item], -1),
      np.where(brand_only, -1,
               np.where(use_synonym, synonym, world.leaf_noun[leaf]))],
                   axis=1).astype(np.int64)
  # A typo in one of the row's words.
  present = slots >= 0
  pick = (rng.random(m) * present.sum(axis=1)).astype(np.int64)
  column = np.argmax(np.cumsum(present, axis=1) > pick[:, None], axis=1)
  rows = np.arange(m)
  variant = world.typo_variants[slots[rows, column],
                                rng.integers(0, _TYPOS_PER_WORD, m)]
  typo = (rng.random(m) < config.typo_rate) & (variant >= 0)
  slots[rows[typo], column[typo]] = variant[typo]

  tokens = _pack(np.concatenate([p_slots, slots]))
  strings = _render(world.words, tokens)
  unique, first, inverse = np.unique(strings, return_index=True,
                                     return_inverse=True)
  by_appearance = np.argsort(first, kind="stable")
  query_id = np.empty(len(unique), dtype=np.int64)
  query_id[by_appearance] = np.arange(len(unique))
  row_query = query_id[inverse.ravel()]
  keep = row_query < config.num_queries
  kept = by_appearance[:config.num_queries]
  none = np.full(len(p_leaf), -1)
  world.query_strings = unique[kept]
  world.query_tokens = tokens[first[kept]]
  world.intent_query = row_query[keep].astype(np.int32)
  world.intent_leaf = np.concatenate(
      [p_leaf, np.where(brand_only, -1, leaf)])[keep].astype(np.int32)
  world.intent_brand = np.concatenate(
      [p_brand, np.where(with_brand, world.item_brand[item], -1)]
  )[keep].astype(np.int32)
  world.intent_colour = np.concatenate(
      [none, np.where(with_colour, world.item_colour[item], -1)]
  )[keep].astype(np.int32)
  world.intent_size = np.concatenate(
      [none, np.where(with_size, world.item_size[item], -1)]
  )[keep].astype(np.int32)
  world.intent_item = np.concatenate([p_item, item])[keep].astype(np.int32)


def _distinct_intents(world: _World
                     ) -> Tuple[np.ndarray, np.ndarray, Tuple[np.ndarray, ...]]:
  """The distinct intents of each query, sorted by query: (start, count) per
  query and the (leaf, brand, colour, size) columns."""
  rows = np.unique(np.stack([world.intent_query, world.intent_leaf,
                             world.intent_brand, world.intent_colour,
                             world.intent_size], axis=1), axis=0)
  counts = np.bincount(rows[:, 0], minlength=len(world.query_strings))
  return (np.cumsum(counts) - counts, counts,
          tuple(rows[:, k] for k in range(1, 5)))


def _relevance(world: _World, query, item) -> np.ndarray:
  """`SyntheticWorld.relevance` of a finished or draft world."""
  query, item = np.broadcast_arrays(np.asarray(query, dtype=np.int64),
                                    np.asarray(item, dtype=np.int64))
  shape = query.shape
  query, item = query.ravel(), item.ravel()
  starts, counts, fields = _distinct_intents(world)
  n = counts[query]
  pair = np.repeat(np.arange(len(query)), n)
  row = np.repeat(starts[query] - np.cumsum(n) + n, n) + np.arange(n.sum())
  grades = _grade(world, *(f[row] for f in fields), item[pair])
  if not len(query):
    return np.zeros(shape, dtype=np.int8)
  # Every query has at least one intent, so each pair owns a segment.
  return np.maximum.reduceat(grades, np.cumsum(n) - n).reshape(shape)


def _grade(world: _World, leaf: np.ndarray, brand: np.ndarray,
           colour: np.ndarray, size: np.ndarray,
           item: np.ndarray) -> np.ndarray:
  """Relevance 0..3 of items to single intents (see the module docstring)."""
  item_leaf = world.item_leaf[item]
  item_brand = world.item_brand[item]
  attributes = ((colour < 0) | (world.item_colour[item] == colour)) & (
      (size < 0) | (world.item_size[item] == size))
  by_leaf = np.where(
      item_leaf == leaf,
      np.where((brand < 0) | (item_brand == brand),
               np.where(attributes, 3, 2), 1),
      np.where(world.leaf_mid[item_leaf]
               == world.leaf_mid[np.maximum(leaf, 0)], 1, 0))
  by_brand = np.where(item_brand == brand, np.where(attributes, 3, 2), 0)
  return np.where(leaf >= 0, by_leaf, by_brand).astype(np.int8)


# ---------------------------------------------------------------------------
# 7. Search sessions (6, relevance, is `_grade`).


def _bare_word_rows(world: _Draft, row: np.ndarray, rate: float
                    ) -> np.ndarray:
  """Searches whose query row is seeded in a meaning of a polysemous word
  (its leaf, or its brand) switch, with probability `rate`, to that
  meaning's bare-word row: the string becomes ambiguous ("apple"), the
  intent (what the user clicks) stays the meaning. The bare-word rows are
  the first intent rows, in `_word_meanings` order (step 5)."""
  _, p_leaf, p_brand, _ = _word_meanings(world)
  seed = world.intent_item[row]
  meaning = np.full(len(row), -1, dtype=np.int64)
  for j in range(len(p_leaf) - 1, -1, -1):  # the first match wins
    match = (world.item_leaf[seed] == p_leaf[j] if p_leaf[j] >= 0 else
             world.item_brand[seed] == p_brand[j])
    meaning = np.where(match, j, meaning)
  rng = _rng(world.config.seed, _POLYSEMY)
  switch = (meaning >= 0) & (rng.random(len(row)) < rate)
  return np.where(switch, meaning, row)


# Browsing events before a search whose brands `recent_brand_click_boost`
# favours (the newest of them is the event the search follows).
RECENT_BRAND_EVENTS = 5


def _browsed_brand(world: _Draft, context: np.ndarray, item: np.ndarray
                   ) -> np.ndarray:
  """bool: whether `item`'s brand is the brand of one of the user's last
  `RECENT_BRAND_EVENTS` browsing events up to event `context` (the log is
  grouped by user, in time order)."""
  brand = world.item_brand[item]
  user = world.event_user[context]
  hit = np.zeros(len(item), dtype=bool)
  for back in range(RECENT_BRAND_EVENTS):
    event = np.maximum(context - back, 0)
    hit |= ((context - back >= 0) & (world.event_user[event] == user)
            & (world.item_brand[world.event_item[event]] == brand))
  return hit


# Share of searches whose intent is the anchor leaf of the browsing session
# they follow.
_SEARCH_IN_SESSION = 0.8


def _searches(world: _Draft, lb_index: _PopularityIndex,
              brand_index: _PopularityIndex) -> None:
  """Sets the search log `search_*` and its clicks `click_*` (step 7)."""
  config = world.config
  rng = _rng(config.seed, _SEARCH)
  num_brands = config.num_brands
  per_user = rng.poisson(config.mean_searches_per_user, config.num_users)
  user = np.repeat(np.arange(config.num_users), per_user)
  s = len(user)
  events = np.bincount(world.event_user, minlength=config.num_users)
  context = (np.cumsum(events) - events)[user] + (
      rng.random(s) * events[user]).astype(np.int64)
  time = world.event_time[context] + 1 + rng.exponential(30.0, s).astype(
      np.int64)
  _, other_leaf = _leaf_in_interest(world, lb_index, num_brands, user, rng)
  leaf = np.where(rng.random(s) < _SEARCH_IN_SESSION,
                  world.session_leaf[world.event_session[context]],
                  other_leaf)

  # A query row seeded in that leaf, else in its interest, else any.
  home = world.item_leaf[world.intent_item]
  by_home = np.argsort(home, kind="stable")
  counts = np.bincount(home, minlength=config.num_leaves)
  starts = np.cumsum(counts) - counts
  first, count = _interest_leaves(world)
  interest = world.leaf_interest[leaf]
  int_lo = starts[first[interest]]
  last = first[interest] + count[interest] - 1
  int_hi = starts[last] + counts[last]
  in_leaf = counts[leaf] > 0
  in_interest = int_hi > int_lo
  lo = np.where(in_leaf, starts[leaf], np.where(in_interest, int_lo, 0))
  hi = np.where(in_leaf, starts[leaf] + counts[leaf],
                np.where(in_interest, int_hi, len(home)))
  row = by_home[lo + (rng.random(s) * (hi - lo)).astype(np.int64)]
  if config.polysemous_search_rate > 0:
    row = _bare_word_rows(world, row, config.polysemous_search_rate)
  query = world.intent_query[row]

  # The result list: each slot from a random intent of the query string.
  k = config.results_per_search
  search = np.repeat(np.arange(s), k)
  position = np.tile(np.arange(k), s)
  f = len(search)
  by_query = np.argsort(world.intent_query, kind="stable")
  q_counts = np.bincount(world.intent_query,
                         minlength=len(world.query_strings))
  q_starts = np.cumsum(q_counts) - q_counts
  fq = query[search]
  engine = by_query[q_starts[fq] + (rng.random(f) * q_counts[fq]).astype(
      np.int64)]
  e_leaf = world.intent_leaf[engine].astype(np.int64)
  e_brand = world.intent_brand[engine].astype(np.int64)
  has_leaf = e_leaf >= 0
  source = rng.random(f)
  from_pool = source < config.result_relevance
  from_related = ~from_pool & (
      source < config.result_relevance + (1 - config.result_relevance) / 2)
  leaf0 = np.maximum(e_leaf, 0)
  pool_lo = leaf0 * num_brands + np.maximum(e_brand, 0)
  pool_hi = np.where(e_brand >= 0, pool_lo + 1, (leaf0 + 1) * num_brands)
  pool_lo = np.where(e_brand >= 0, pool_lo, leaf0 * num_brands)
  leaves_per_mid = config.leaves_per_mid
  leaves_per_root = config.mids_per_root * leaves_per_mid
  mid = world.leaf_mid[leaf0].astype(np.int64)
  root = world.brand_root[np.maximum(e_brand, 0)].astype(np.int64)
  related_lo = np.where(has_leaf, mid * leaves_per_mid,
                        root * leaves_per_root) * num_brands
  related_hi = np.where(has_leaf, (mid + 1) * leaves_per_mid,
                        (root + 1) * leaves_per_root) * num_brands
  key_lo = np.where(from_pool & has_leaf, pool_lo,
                    np.where(from_related, related_lo, 0))
  key_hi = np.where(from_pool & has_leaf, pool_hi,
                    np.where(from_related, related_hi,
                             config.num_leaves * num_brands))
  u = rng.random(f)
  by_lb = lb_index.draw(*lb_index.span(key_lo, key_hi), u)
  brand_pool = from_pool & ~has_leaf
  b_start, b_end = brand_index.span(np.maximum(e_brand, 0), e_brand + 1)
  by_brand = brand_index.draw(np.where(brand_pool, b_start, 0),
                              np.where(brand_pool, b_end, config.num_items), u)
  item = np.where(brand_pool, by_brand, by_lb)

  # Clicks: examination x attractiveness; repeated items show once.
  grid = item.reshape(s, k)
  order = np.argsort(grid, axis=1, kind="stable")
  ranked = np.take_along_axis(grid, order, axis=1)
  repeat = np.zeros(grid.shape, dtype=bool)
  repeat[:, 1:] = ranked[:, 1:] == ranked[:, :-1]
  duplicate = np.zeros(grid.shape, dtype=bool)
  np.put_along_axis(duplicate, order, repeat, axis=1)
  r = row[search]
  grade = _grade(world, world.intent_leaf[r], world.intent_brand[r],
                 world.intent_colour[r], world.intent_size[r], item)
  rank = np.empty(config.num_items)
  rank[np.argsort(-world.item_popularity, kind="stable")] = np.arange(
      config.num_items)
  percentile = 1.0 - rank / config.num_items
  attraction = (_GRADE_ATTRACTION[grade]
                * np.where(world.item_tier[item]
                           == world.user_power[user[search]], 1.25, 0.8)
                * (1.0 + config.popularity_click_boost * percentile[item]))
  if config.recent_brand_click_boost > 0:
    attraction = attraction * np.where(
        _browsed_brand(world, context[search], item),
        1.0 + config.recent_brand_click_boost, 1.0)
  examination = (position + 1.0) ** -config.position_bias
  click = np.flatnonzero(
      (rng.random(f) < np.minimum(1.0, examination * attraction))
      & ~duplicate.ravel())
  world.search_user = user.astype(np.int32)
  world.search_time = time
  world.search_intent = row.astype(np.int32)
  world.search_query = query.astype(np.int32)
  world.click_search = search[click].astype(np.int32)
  world.click_item = item[click].astype(np.int32)
  world.click_position = position[click].astype(np.int16)
  world.click_time = time[search[click]] + 5 * (position[click] + 1)
  world.click_grade = grade[click]


# ---------------------------------------------------------------------------
# Judgments.


def _judgments(world: _Draft, lb_index: _PopularityIndex,
               brand_index: _PopularityIndex) -> None:
  """Grades of a bounded candidate set per query: the seed items, items of
  the intended (leaf, brand) / leaf / brand, of the mid category, and
  uniformly random items."""
  config = world.config
  rng = _rng(config.seed, _JUDGMENTS)
  num_brands = config.num_brands
  num_queries = len(world.query_strings)
  _, counts, (leaf, brand, _, _) = _distinct_intents(world)
  intent_query = np.repeat(np.arange(num_queries), counts)
  has_leaf = leaf >= 0
  lo = leaf * num_brands + np.where(brand >= 0, brand, 0)
  hi = np.where(brand >= 0, lo + 1, (leaf + 1) * num_brands)
  lb_start, lb_end = lb_index.span(np.where(has_leaf, lo, 0),
                                   np.where(has_leaf, hi, 0))
  br_start, br_end = brand_index.span(np.where(has_leaf, 0, brand),
                                      np.where(has_leaf, 0, brand + 1))
  mid = world.leaf_mid[np.maximum(leaf, 0)].astype(np.int64)
  per_mid = config.leaves_per_mid * num_brands
  rel_start, rel_end = lb_index.span(np.where(has_leaf, mid * per_mid, 0),
                                     np.where(has_leaf, (mid + 1) * per_mid, 0))
  queries, items = [world.intent_query], [world.intent_item]
  for index, start, end, cap in (
      (lb_index, lb_start, lb_end, config.judged_per_query),
      (brand_index, br_start, br_end, config.judged_per_query),
      (lb_index, rel_start, rel_end, config.judged_related)):
    owner, pos = _stratified(start, end, cap, rng)
    queries.append(intent_query[owner])
    items.append(index.order[pos])
  queries.append(np.repeat(np.arange(num_queries), config.judged_random))
  items.append(rng.integers(0, config.num_items,
                            num_queries * config.judged_random))
  key = np.unique(np.concatenate(queries).astype(np.int64) * config.num_items
                  + np.concatenate(items))
  world.judged_query = (key // config.num_items).astype(np.int32)
  world.judged_item = (key % config.num_items).astype(np.int32)
  world.judged_grade = _relevance(world, world.judged_query,
                                  world.judged_item)
