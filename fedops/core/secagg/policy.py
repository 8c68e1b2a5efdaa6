"""What a site pins before it takes part in a SecAgg+ round, whatever the coordinator says.

The coordinator proposes the cohort, the degree ``k`` and the threshold ``t``;
the site refuses a round whose parameters would let a coordinator (with up to
``max_colluders`` colluding sites) rebuild its update, and a distributed-DP
encoding with less noise or a larger clip than it agreed to. Every refusal is a
:class:`~fedops.core.secagg.primitives.ProtocolError` whose message names the rule.

Why ``2t >= k + c + 1``: a client reveals, for each neighbour, one share of either
its self-mask seed or its mask key, never both. An honest owner's two secrets
are both rebuilt only if ``t`` holders reveal each; with ``c`` colluders among
its ``k`` holders that needs ``(t - c) + (t - c) <= k - c`` honest holders, i.e.
``2t <= k + c``. The same count bounds the cross-owner attack that the
consistency check closes (see :mod:`fedops.core.secagg`): with one survivor
set for every honest revealer, a victim's self-mask holders (in the set) and
the partners whose mask keys are rebuilt (not in it) are disjoint sets of at
least ``t`` of its ``k`` neighbours, up to the ``c`` colluders.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fedops.core.secagg import graph
from fedops.core.secagg.primitives import ProtocolError
from fedops.core.secagg.update import Encoding

#: below this Skellam parameter per word, accounting the noise as the Gaussian of its
#: variance is no longer sound (Agarwal et al. 2021); honest rounds use µ ~ 1e6 to 1e10
MIN_SKELLAM_MU = 100.0

#: the smallest cohort a site takes part in by default: a sum of two reveals the other
DEFAULT_MIN_COHORT = 3


@dataclass(frozen=True, slots=True, kw_only=True)
class SecAggPolicy:
    """A site's floors for secure aggregation (kit policy ``secagg_*`` keys or client flags).

    Args:
        min_cohort: fewest sites in the cohort, and in the survivor set it reveals for,
            colluders included: a sum at the floor hides ``min_cohort - c`` honest inputs
            from a coordinator with ``c`` colluders (pin it with that in mind).
        min_degree: fewest neighbours (``None``: ``min(n - 1, 2·⌈log2 n⌉)`` for a cohort of n).
        max_colluders: colluding sites the threshold must withstand (``2t >= k + c + 1``).
        min_noise_multiplier: distributed DP: the least noise multiplier of the cohort's
            summed noise (0: the site does not require distributed DP).
        max_l2_clip: distributed DP: the largest L2 clip (``None``: any).
    """

    min_cohort: int = DEFAULT_MIN_COHORT
    min_degree: int | None = None
    max_colluders: int = 0
    min_noise_multiplier: float = 0.0
    max_l2_clip: float | None = None

    def __post_init__(self) -> None:
        if self.min_cohort < 2:
            raise ValueError(f"secagg min_cohort must be at least 2, got {self.min_cohort}")
        if self.min_degree is not None and self.min_degree < 1:
            raise ValueError(f"secagg min_degree must be at least 1, got {self.min_degree}")
        if self.max_colluders < 0:
            raise ValueError(f"secagg max_colluders must be >= 0, got {self.max_colluders}")
        if not (math.isfinite(self.min_noise_multiplier) and self.min_noise_multiplier >= 0):
            raise ValueError("secagg min_noise_multiplier must be a number >= 0")
        if self.max_l2_clip is not None and not self.max_l2_clip > 0:
            raise ValueError("secagg max_l2_clip must be > 0")

    def required_degree(self, cohort: int) -> int:
        wanted = graph.default_degree(cohort) if self.min_degree is None else self.min_degree
        return min(cohort - 1, wanted)

    def check_round(self, cohort: int, degree: int, threshold: int) -> None:
        """Refuse a cohort, degree or threshold below this site's floors."""
        if cohort < self.min_cohort:
            raise ProtocolError(
                f"the cohort has {cohort} sites; this site's policy needs at least "
                f"{self.min_cohort} (secagg min_cohort)"
            )
        need = self.required_degree(cohort)
        if degree < need:
            raise ProtocolError(
                f"{degree} neighbours per site in a cohort of {cohort}; this site's policy needs "
                f"at least {need} (secagg min_degree)"
            )
        if not threshold <= degree:
            raise ProtocolError(f"threshold {threshold} exceeds the {degree} neighbours")
        c = self.max_colluders
        if 2 * threshold < degree + c + 1:
            raise ProtocolError(
                f"threshold {threshold} of {degree} neighbours would let the coordinator with "
                f"{c} colluding site(s) rebuild both secrets of one site: it must be at least "
                f"{(degree + c) // 2 + 1} (2t > k + c, secagg max_colluders={c})"
            )

    def quorum(self, committee: int) -> int:
        """Committee signatures over one survivor set a site needs before it reveals.

        ``⌊(m + c)/2⌋ + 1`` of the round's committee of ``m`` sites. Each honest site
        signs one set per round, so two different sets cannot both gather this many
        (their honest signers would have to number more than the committee's honest
        members, even with all ``c`` colluders in it): every honest site that
        reveals, reveals for the same set. This holds for any committee the
        coordinator names; a committee that drops out only stops the round.
        """
        return (committee + self.max_colluders) // 2 + 1

    def check_survivors(self, count: int, encoding: Encoding | None = None) -> None:
        """Refuse a survivor set below this site's cohort floor or the round's sealed one."""
        if count < self.min_cohort:
            raise ProtocolError(
                f"only {count} sites survive; this site reveals nothing for a sum of fewer "
                f"than {self.min_cohort} (secagg min_cohort)"
            )
        if encoding is not None and count < encoding.min_survivors:
            raise ProtocolError(
                f"only {count} sites survive; the round's encoding promised a sum of at "
                f"least {encoding.min_survivors}, which this site's floors were checked "
                "against: it signs no smaller set"
            )

    def check_encoding(self, encoding: Encoding, cohort: int, dimension: int = 0) -> None:
        """Refuse a survivor floor below the cohort floor, distributed-DP noise below the
        noise floor, or a clip above the ceiling.

        Both floors are checked against ``encoding.min_survivors``, the fewest survivors
        the round may sum: every honest site refuses to sign a smaller survivor set
        (:meth:`check_survivors`), and a committee quorum of signatures is needed
        before anyone reveals, so no sum with fewer inputs, or fewer noise shares, is
        ever unmasked, even if this site's neighbours hold lower floors.

        ``dimension``: the update's length, once the site knows it (at masking): the
        rounding to the grid then counts in the sensitivity, so a coarse grid the
        coordinator picks cannot turn the noise floor into noise-free ±1 words.
        """
        if encoding.min_survivors < self.min_cohort:
            raise ProtocolError(
                f"the round would unmask a sum of as few as {encoding.min_survivors} sites; "
                f"this site's policy needs at least {self.min_cohort} (secagg min_cohort)"
            )
        if not encoding.private:
            if self.min_noise_multiplier > 0:
                raise ProtocolError(
                    "this site only sends updates with distributed DP noise (secagg "
                    f"min_noise_multiplier={self.min_noise_multiplier}); the request has none"
                )
            return
        if self.max_l2_clip is not None and encoding.l2_clip > self.max_l2_clip:
            raise ProtocolError(
                f"distributed DP clip {encoding.l2_clip:g} exceeds this site's "
                f"max_l2_clip {self.max_l2_clip:g}"
            )
        # the worst case: the fewest survivors, colluders among them adding no noise
        honest = max(min(encoding.min_survivors, cohort) - self.max_colluders, 0)
        sigma = implied_noise_multiplier(encoding, honest, dimension)
        if sigma < self.min_noise_multiplier * (1 - 1e-9):
            raise ProtocolError(
                f"the requested noise gives the cohort's sum a noise multiplier of {sigma:.4g} "
                f"if only {min(encoding.min_survivors, cohort)} of the {cohort} sites survive "
                f"(the round's sealed minimum); this site's policy needs at least "
                f"{self.min_noise_multiplier:g} (secagg min_noise_multiplier)"
            )
        if self.min_noise_multiplier > 0 and encoding.noise_mu < MIN_SKELLAM_MU:
            raise ProtocolError(
                f"Skellam noise µ={encoding.noise_mu:.4g} per word is below {MIN_SKELLAM_MU:g}, "
                "where accounting it as a Gaussian no longer holds (secagg "
                "min_noise_multiplier)"
            )


def implied_noise_multiplier(encoding: Encoding, cohort: int, dimension: int = 0) -> float:
    """σ of the noise summed over ``cohort`` clients, over one update's sensitivity.

    Each client adds Skellam(µ) noise, variance ``2µ`` words², so ``cohort``
    clients give std ``√(2µ·cohort)`` words. One word is ``2·qclip/levels`` in
    value; an update of L2 norm at most ``l2_clip`` is ``S = l2_clip/step`` words,
    and stochastic rounding moves each of its ``dimension`` words by less than
    one: the sum moves by at most ``S + √dimension`` words. The site's policy
    counts only the noise of ``cohort − c`` sites: colluders add none.
    """
    if not encoding.private:
        return 0.0
    # a quantizer clip below the L2 clip shrinks the noise, not the sensitivity
    step = 2 * encoding.quantizer.clip / encoding.quantizer.levels
    sensitivity = encoding.l2_clip / step + math.sqrt(dimension)
    return math.sqrt(2 * encoding.noise_mu * cohort) / sensitivity
