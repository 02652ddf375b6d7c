"""Plain-language readings of an evaluation: what each number of ``eval.json`` measures, in which
unit, and whether it is better or worse than the baselines and published figures beside it.

Pure functions over the dict that ``svhn-vae evaluate`` writes (:func:`svhn_vae.evaluate.evaluate`
plus ``probe`` and ``quality`` from :mod:`svhn_vae.cli_evaluate`); any part may be missing or None,
and its reading is then left out. The run's config (``Config.to_dict()``), when given, supplies
what ``eval.json`` does not record: the dataset of an older file, and whether the PCA codes were
whitened and of dequantized pixels, which decides whether the write-up's PCA-space numbers apply.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["IWAE_PAPER_VAE_NATS", "WRITEUP_COMPONENTS", "Comparison", "Reading", "Scale", "WriteupTable",
           "readings", "writeup_mismatches", "writeup_table"]

IWAE_PAPER_VAE_NATS = 86.76
"""Burda, Grosse, Salakhutdinov 2016 (IWAE), table 1: test NLL in nats of the VAE with one
stochastic layer (k=1) on binarized MNIST."""
IWAE_PAPER = "the IWAE paper's one-layer VAE"
WRITEUP_COMPONENTS = 500
"""K of the 2017 write-up's PCA space (components of pixels/255, not whitened)."""
WRITEUP = "the 2017 write-up"
WRITEUP_COLUMN = "2017 write-up (published)"

Json = Mapping[str, Any]
"""A parsed JSON object: eval.json, or the run's config as a dict."""


# --- numbers, units and comparisons --------------------------------------------------------------

@dataclass(frozen=True)
class Scale:
    """How a metric is written and which way is better (None: neither, e.g. a KL on its own)."""

    unit: str
    """Appended to the number, with its leading space: " bits/dim", " nats", "%", " dB", ""."""
    decimals: int
    lower_is_better: bool | None
    factor: float = 1.0
    """Shown number = stored value * factor (100 for fractions shown as percent)."""
    difference_unit: str | None = None
    """Unit of a difference between two values; None: ``unit``."""

    def number(self, value: float) -> str:
        return f"{value * self.factor:.{self.decimals}f}"

    def show(self, value: float) -> str:
        return self.number(value) + self.unit

    def show_difference(self, value: float) -> str:
        return self.number(value) + (self.unit if self.difference_unit is None else self.difference_unit)


BPD = Scale(" bits/dim", 3, lower_is_better=True)
NLL = Scale(" nats", 2, lower_is_better=True)
LOG_LIKELIHOOD = Scale(" nats", 2, lower_is_better=False)
KL = Scale(" nats", 2, lower_is_better=None)
ERROR = Scale("%", 1, lower_is_better=True, factor=100.0, difference_unit=" percentage points")
PSNR = Scale(" dB", 2, lower_is_better=False)
FID = Scale("", 2, lower_is_better=True)
ENTROPY = Scale(" bits", 2, lower_is_better=False)


@dataclass(frozen=True)
class Comparison:
    """The run's value of a metric against one reference value in the same unit."""

    reference: str
    """Who the reference is, as it reads in a sentence: "the full-covariance Gaussian"."""
    run: float
    other: float
    scale: Scale

    @property
    def verdict(self) -> str:
        """'better' or 'worse' ('higher'/'lower' for a scale without a direction), or 'level' when
        the difference does not show at the scale's decimals."""
        difference = self.run - self.other
        if round(abs(difference) * self.scale.factor, self.scale.decimals) == 0:
            return "level"
        if self.scale.lower_is_better is None:
            return "higher" if difference > 0 else "lower"
        return "better" if (difference < 0) == self.scale.lower_is_better else "worse"

    def difference(self) -> str:
        """'0.849 bits/dim worse', or 'level'."""
        if self.verdict == "level":
            return "level"
        return f"{self.scale.show_difference(abs(self.run - self.other))} {self.verdict}"

    def sentence(self) -> str:
        """'0.849 bits/dim worse than the full-covariance Gaussian (5.289 bits/dim)'."""
        other = f"{self.reference} ({self.scale.show(self.other)})"
        return f"level with {other}" if self.verdict == "level" else f"{self.difference()} than {other}"


def _number(d: Any, *path: str) -> float | None:
    """The finite number at ``d[path[0]][path[1]]...``, or None when any part is missing or not a number."""
    for key in path:
        if not isinstance(d, Mapping):
            return None
        d = d.get(key)
    if isinstance(d, bool) or not isinstance(d, (int, float)) or not math.isfinite(d):
        return None
    return float(d)


def _compare(reference: str, run: float, other: float | None, scale: Scale) -> list[Comparison]:
    """[Comparison] when the reference value exists, else [] (so a missing baseline drops out)."""
    return [] if other is None else [Comparison(reference, run, other, scale)]


# --- a reading -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Reading:
    """One metric in words: its value, what it measures and how it compares."""

    metric: str
    value: str
    """The number(s) with their unit: "6.138 bits/dim"."""
    meaning: str
    """What it measures, in which unit, and which way is better."""
    comparisons: tuple[Comparison, ...] = ()
    subject: str = "This"
    """Who is compared, as the sentence starts: "This is 0.1 bits/dim better than ..."."""
    caveat: str = ""
    keys: tuple[str, ...] = ()
    """The (dotted) ``eval.json`` keys the reading explains."""

    @property
    def verdict(self) -> str:
        """The comparisons in one sentence, then the caveat: "This is 0.1 bits/dim better than ..."."""
        parts = [f"{self.subject} is {'; '.join(c.sentence() for c in self.comparisons)}."] if self.comparisons else []
        return " ".join(parts + ([self.caveat] if self.caveat else []))

    @property
    def text(self) -> str:
        """The whole reading: meaning, comparisons, caveat."""
        return f"{self.meaning} {self.verdict}".strip()


def _dataset(m: Json, config: Json | None) -> str | None:
    """The dataset evaluated: eval.json's, else the config's."""
    return m.get("dataset") or ((config or {}).get("data") or {}).get("dataset")


def _split(m: Json) -> str:
    """'test images', or those of the split eval.json names ('val images')."""
    return f"{m.get('split') or 'test'} images"


def _scored_on(m: Json) -> list[str]:
    """['IWAE bound', 'K=1000 importance samples', '10000 images']: what eval.json records of the scoring."""
    k, n = _number(m, "importance_samples"), _number(m, "n")
    return ["IWAE bound"] + ([f"K={k:.0f} importance samples"] if k else []) + ([f"{n:.0f} images"] if n else [])


BASELINE_NAMES = {"gaussian": "the full-covariance Gaussian", "ppca": "PPCA",
                  "histogram": "the independent per-pixel histogram"}
"""The baselines of 8-bit images (``eval.json``'s ``baselines.<key>_bpd``) in words."""


def _likelihood_8_bit(m: Json, config: Json | None) -> list[Reading]:
    """Bits/dim of a model of 8-bit images (a density on dequantized pixels, or a discrete likelihood),
    against the best of the baselines first, then the others."""
    bpd = _number(m, "bpd_iwae")
    if bpd is None:
        return []
    base = m.get("baselines") or {}
    k = _number(base, "ppca_components")
    names = {**BASELINE_NAMES, "ppca": f"PPCA with {k:.0f} components" if k else "PPCA"}
    scored = {name: _number(base, f"{name}_bpd") for name in names if _number(base, f"{name}_bpd") is not None}
    best = min(scored, key=scored.__getitem__) if scored else None  # eval.json of older releases has no "best"
    order = ([best] if best else []) + [name for name in scored if name != best]
    comparisons = [Comparison(names[name] + (" (the best baseline)" if name == best else ""), bpd, scored[name], BPD)
                   for name in order]
    discrete = m.get("data") == "8-bit"
    scoring = _scored_on(m) + (["pixels dequantized to [0, 1]"] if m.get("data") == "dequantized" else []) + (
        ["the 8-bit values themselves"] if discrete else [])
    nll = _number(m, "nll_nats")
    of_what = "of a probability, so never negative" if discrete else "of a density, so it may be negative"
    per_image = f" In nats per image: {nll:.2f} ({of_what})." if nll is not None else ""
    meaning = (f"Bits per dimension of the {_split(m)} under the model ({', '.join(scoring)}): the "
               "average cost of coding one 8-bit pixel channel, an upper bound since the IWAE bound is a lower "
               f"bound on log p(x); lower is better, 8 is a uniform guess over the 256 levels.{per_image}")
    return [Reading("Test likelihood", BPD.show(bpd), meaning, tuple(comparisons),
                    keys=("bpd_iwae", "nll_nats", "iwae_nats", "baselines", "bpd_gain_over_ppca",
                          "bpd_gain_over_best_baseline"))]


def _likelihood_binarized(m: Json, config: Json | None) -> list[Reading]:
    nll = _number(m, "nll_nats")
    if nll is None:
        return []
    comparisons = _compare("independent Bernoulli pixels", nll,
                           _number(m, "baselines", "independent_bernoulli_nats"), NLL)
    caveat = ""
    if _dataset(m, config) == "mnist":
        comparisons += _compare(IWAE_PAPER, nll, IWAE_PAPER_VAE_NATS, NLL)
        caveat = "The IWAE paper: Burda, Grosse and Salakhutdinov 2016, table 1."
    bpd = _number(m, "bpd_iwae")
    per_pixel = f" Per binary pixel: {bpd:.4f} bits." if bpd is not None else ""
    meaning = (f"Negative log-likelihood of the {_split(m)} binarized once with a fixed seed, in nats per "
               f"image ({', '.join(_scored_on(m))}): an upper bound on the true value; lower is better.{per_pixel}")
    return [Reading("Test NLL", NLL.show(nll), meaning, tuple(comparisons), caveat=caveat,
                    keys=("nll_nats", "iwae_nats", "bpd_iwae", "baselines", "nats_gain_over_independent"))]


def _elbo(m: Json, config: Json | None) -> list[Reading]:
    elbo, iwae = _number(m, "elbo_nats"), _number(m, "iwae_nats")
    if elbo is None:
        return []
    bpd = _number(m, "bpd_elbo")
    value = LOG_LIKELIHOOD.show(elbo) + (f" ({BPD.show(bpd)})" if bpd is not None else "")
    meaning = ("The ELBO, the bound the model is trained on: a lower bound on log p(x) in nats per image; "
               "higher is better.")
    if iwae is not None:
        meaning += (f" The IWAE bound from the same samples is {iwae - elbo:.2f} nats tighter: the gap measures "
                    "how far the encoder's q(z|x) is from the true posterior (smaller is better).")
    return [Reading("ELBO", value, meaning, keys=("elbo_nats", "bpd_elbo"))]


def _reconstruction(m: Json, config: Json | None) -> list[Reading]:
    rec = m.get("reconstruction") or {}
    mse, psnr = _number(rec, "mse"), _number(rec, "psnr")
    if mse is None:
        return []
    value = f"{PSNR.show(psnr)} (MSE {mse:.5f})" if psnr is not None else "MSE 0 (perfect)"
    meaning = ("Peak signal-to-noise ratio of the reconstruction decoded from the posterior mean, "
               "10 log10(1 / MSE) with pixels in [0, 1]; higher is better (MSE: mean squared error per pixel).")
    pca_psnr = _number(rec, "pca_only_psnr")
    comparisons = _compare("the PCA projection alone", psnr, pca_psnr, PSNR) if psnr is not None else []
    caveat = ("The VAE decodes into the same PCA subspace, so the projection is the best a reconstruction can "
              "reach here; the gap is what the latent code loses." if pca_psnr is not None else "")
    return [Reading("Reconstruction", value, meaning, tuple(comparisons), caveat=caveat, keys=("reconstruction",))]


# --- the write-up's PCA space --------------------------------------------------------------------

def writeup_mismatches(components: float | None, config: Json | None = None) -> list[str]:
    """How the run's PCA space differs from the write-up's (K=500 components of pixels/255, not
    whitened); empty when its PCA-space numbers are comparable. Unknown settings are not held against it."""
    config = config or {}
    mismatches = []
    if components != WRITEUP_COMPONENTS:
        k = "an unrecorded number of" if components is None else f"K={components:.0f}"
        mismatches.append(f"{k} components, not {WRITEUP_COMPONENTS}")
    if (config.get("pca") or {}).get("whiten") is True:
        mismatches.append("whitened codes (which changes their units, so the nats)")
    if (config.get("data") or {}).get("dequantize") is True:
        mismatches.append("dequantized pixels, not pixels/255")
    return mismatches


def _writeup_caveat(components: float | None, config: Json | None) -> str:
    mismatches = writeup_mismatches(components, config)
    setting = f"The write-up used K={WRITEUP_COMPONENTS} principal components of pixels/255, not whitened"
    if mismatches:
        return f"{setting}. This run differs ({'; '.join(mismatches)}), so its numbers are not comparable."
    return f"{setting}, as this run does: its numbers are comparable."


def _pca_terms(m: Json) -> tuple[float | None, ...]:
    """(rec, kl, components, the write-up's rec, its kl) of eval.json's ``pca_space``; None where absent."""
    pca = m.get("pca_space") or {}
    ref = pca.get("reference_blog_2017") or {}
    return (_number(pca, "rec"), _number(pca, "kl"), _number(pca, "components"), _number(ref, "rec"),
            _number(ref, "kl"))


def _pca_space(m: Json, config: Json | None) -> list[Reading]:
    rec, kl, k, ref_rec, ref_kl = _pca_terms(m)
    if rec is None or kl is None:
        return []
    comparisons: list[Comparison] = []
    if not writeup_mismatches(k, config) and ref_rec is not None and ref_kl is not None:
        # the ELBO sums up both terms; the table below compares each of them
        comparisons = [Comparison(f"{WRITEUP}'s", rec - kl, ref_rec - ref_kl, LOG_LIKELIHOOD)]
    space = f"the model's {k:.0f}-dimensional PCA space" if k is not None else "the model's PCA space"
    meaning = (f"The write-up's figures, in nats per image in {space}: the reconstruction term log p(c|z) "
               "(higher is better) and the KL divergence of q(z|x) from the prior, the nats spent on the latent "
               f"code; their difference, {rec - kl:.2f} nats, is the PCA-space ELBO.")
    return [Reading("PCA-space ELBO", f"rec {LOG_LIKELIHOOD.show(rec)}, KL {KL.show(kl)}", meaning,
                    tuple(comparisons), subject="The PCA-space ELBO",
                    caveat=_writeup_caveat(k, config), keys=("pca_space",))]


@dataclass(frozen=True)
class WriteupTable:
    """The run's PCA-space numbers beside the write-up's: rows of text cells, and a note."""

    rows: list[dict[str, str]]
    note: str


def _writeup_row(quantity: str, run: float, other: float, scale: Scale, *, comparable: bool) -> dict[str, str]:
    c = Comparison(WRITEUP, run, other, scale)
    direction = {None: "", True: " (lower is better)", False: " (higher is better)"}[scale.lower_is_better]
    reading = c.difference() + direction if comparable else "not comparable (see below)"
    return {"quantity": quantity, "this run": scale.show(run), WRITEUP_COLUMN: scale.show(other), "reading": reading}


def writeup_table(eval_metrics: Json, config: Json | None = None) -> WriteupTable | None:
    """The PCA-space table of a PCA model's evaluation (None for pixel models or when absent)."""
    rec, kl, k, ref_rec, ref_kl = _pca_terms(eval_metrics)
    if None in (rec, kl, ref_rec, ref_kl):
        return None
    comparable = not writeup_mismatches(k, config)
    rows = [_writeup_row("reconstruction term log p(c|z)", rec, ref_rec, LOG_LIKELIHOOD, comparable=comparable),
            _writeup_row("KL(q(z|x) || p(z))", kl, ref_kl, KL, comparable=comparable),
            _writeup_row("ELBO (reconstruction - KL)", rec - kl, ref_rec - ref_kl, LOG_LIKELIHOOD,
                         comparable=comparable),
            {"quantity": "PCA components K", "this run": "?" if k is None else f"{k:.0f}",
             WRITEUP_COLUMN: str(WRITEUP_COMPONENTS), "reading": "same" if k == WRITEUP_COMPONENTS else "different"}]
    return WriteupTable(rows, "Nats per image. " + _writeup_caveat(k, config))


# --- latent probe and sample quality -------------------------------------------------------------

PROBES = {"knn": "k-NN", "logreg": "logistic regression"}


def _probe_value(result: Json) -> str:
    """'k-NN 35.3% ± 1.2, logistic regression 33.6% ± 0.9' (mean ± std over the draws, in %)."""
    parts = []
    for name, label in PROBES.items():
        mean, std = _number(result, f"{name}_error"), _number(result, f"{name}_error_std")
        if mean is not None:
            parts.append(f"{label} {ERROR.show(mean)}" + (f" ± {ERROR.number(std)}" if std else ""))
    return ", ".join(parts)


def _probe_reading(count: str, result: Json, references: Json) -> Reading | None:
    errors = {name: e for name in PROBES if (e := _number(result, f"{name}_error")) is not None}
    if not errors:
        return None  # skipped: the training set has fewer labels than the count
    best = min(errors, key=errors.__getitem__)
    # reference keys are "<method>_<labels>", e.g. "M1+TSVM_100" (see svhn_vae.probe.REFERENCE)
    comparisons = [Comparison(f"Kingma et al. 2014's {method}", errors[best], error, ERROR)
                   for method, labels in (key.rsplit("_", 1) for key in references if "_" in key)
                   if labels == count and (error := _number(references, f"{method}_{labels}")) is not None]
    labels = _number(result, "labels") or (float(count) if count.isdigit() else None)
    draws = _number(result, "draws")
    images = f"{labels:.0f} labelled training images" if labels else "every labelled training image"
    sets = f", {draws:.0f} balanced draws, mean ± std" if draws and draws > 1 else ""
    meaning = (f"Test error of classifiers fitted on the posterior means of {images}{sets}: how well the latent "
               "code separates the classes it was never told about; lower is better.")
    caveat = ("Same protocol, stronger classifiers: Kingma et al. fitted a transductive SVM on their M1 latents "
              "(M1+TSVM) or trained a semi-supervised model on them (M1+M2)." if comparisons else "")
    name = f"{int(count):,}" if count.isdigit() else count
    return Reading(f"Latent probe, {name} labels", _probe_value(result), meaning, tuple(comparisons),
                   subject=f"The better probe ({PROBES[best]})", caveat=caveat, keys=(f"probe.results.{count}",))


def _probe(m: Json, config: Json | None) -> list[Reading]:
    probe = m.get("probe") or {}
    references = (probe.get("reference") or {}).get(_dataset(m, config)) or {}
    found = (_probe_reading(str(count), result, references) for count, result in (probe.get("results") or {}).items()
             if isinstance(result, Mapping))
    return [r for r in found if r is not None]


def _classification(m: Json, config: Json | None) -> list[Reading]:
    """The label latent's classifier (M2) against the published semi-supervised figures and this
    run's own latent probe at the same label count."""
    found = m.get("classification") or {}
    error, labels = _number(found, "error"), _number(found, "labels_used")
    if error is None or labels is None:
        return []
    count = f"{labels:.0f}"
    published = (found.get("published") or {}).get(count) or {}
    comparisons = [Comparison(f"the published {method}", error, other, ERROR)
                   for method, other in published.items() if isinstance(other, (int, float))]
    probe = ((m.get("probe") or {}).get("results") or {}).get(count) or {}
    probe_errors = [e for name in PROBES if (e := _number(probe, f"{name}_error")) is not None]
    if probe_errors:
        comparisons.append(Comparison("this run's better latent probe", error, min(probe_errors), ERROR))
    meaning = (f"Test error of the model's own classifier q(y|x), trained with {count} labelled images and the "
               "rest unlabelled (Kingma et al. 2014's M2): the fraction of test images it labels wrongly; lower "
               "is better.")
    return [Reading(f"Classifier, {int(labels):,} labels", ERROR.show(error), meaning, tuple(comparisons),
                    keys=("classification.error",))]


def _fid(m: Json, config: Json | None) -> list[Reading]:
    q = m.get("quality") or {}
    fid, floor = _number(q, "fid_classifier"), _number(q, "fid_floor_train_vs_test")
    if fid is None:
        return []
    n = _number(q, "n_samples")
    ratio = f" This run's is {fid / floor:.3g} times the floor." if floor else ""
    decode = f" (each p(x|z)'s {q['decode']})" if q.get("decode") else ""
    count = f"{n:.0f} " if n else ""
    meaning = (f"Fréchet distance between classifier features of {count}generated samples{decode} and "
               "of test images (a domain-specific FID, in squared feature units): how far the samples' feature "
               "statistics are from real images'; lower is better. Its floor, the same distance between training "
               f"and test images, is what real data reaches.{ratio}")
    accuracy = _number(q, "classifier_test_accuracy")
    classifier = f" ({ERROR.show(accuracy)} accurate on test images)" if accuracy is not None else ""
    caveat = (f"Comparable only within this tool: same dataset, same feature classifier{classifier}; never with "
              "the Inception FIDs of papers.")
    return [Reading("Sample quality (FID)", FID.show(fid), meaning,
                    tuple(_compare("the floor of training vs test images", fid, floor, FID)), caveat=caveat,
                    keys=("quality.fid_classifier", "quality.fid_floor_train_vs_test"))]


def _diversity(m: Json, config: Json | None) -> list[Reading]:
    q = m.get("quality") or {}
    covered, entropy = _number(q, "classes_covered"), _number(q, "label_entropy_bits")
    if covered is None or entropy is None:
        return []
    classes = len(q.get("label_histogram") or ()) or 10
    threshold = _number(q, "classes_covered_threshold")
    at_least = f" in at least {ERROR.show(threshold)} of them" if threshold else ""
    top = _number(q, "label_entropy_max_bits") or math.log2(classes)
    meaning = (f"How varied the samples are: the classes the feature classifier sees{at_least}, and the entropy "
               f"of its predicted labels, in bits (at most {top:.2f} for {classes} equally frequent classes); "
               "higher is better, up to what the test images reach.")
    return [Reading("Sample diversity", f"{covered:.0f} of {classes} classes, {ENTROPY.show(entropy)}", meaning,
                    tuple(_compare("the test images", entropy, _number(q, "test_set", "label_entropy_bits"),
                                   ENTROPY)),
                    subject="The entropy", keys=("quality.classes_covered", "quality.label_entropy_bits"))]


# --- all of them ---------------------------------------------------------------------------------

def _likelihood(m: Json, config: Json | None) -> list[Reading]:
    reader = _likelihood_binarized if m.get("data") == "binarized" else _likelihood_8_bit
    return reader(m, config)


READERS: Sequence[Callable[[Json, Json | None], list[Reading]]] = (
    _likelihood, _elbo, _reconstruction, _pca_space, _classification, _probe, _fid, _diversity)


def readings(eval_metrics: Json, *, config: Json | None = None) -> list[Reading]:
    """A reading of every metric present in an ``eval.json`` dict, in the report's order: likelihood,
    ELBO, reconstruction, PCA space, classifier, latent probe, sample quality. ``config``: the run's
    ``Config.to_dict()``, if known."""
    return [reading for reader in READERS for reading in reader(eval_metrics, config)]
