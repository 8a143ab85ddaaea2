"""Diagnostics: per-lag gradient norms, recurrent-weight spectra, gate saturation, clipping statistics."""
from recurrent.diagnostics.gradients import (GradientMonitor, GradientProfile, LayerVerdict, gradient_profile,
                                             linear_probe, plot_profiles, step_states, summary_lines)
from recurrent.diagnostics.weights import (ClipStats, GateSaturation, RecurrentSpectrum, cell_gates, clip_stats,
                                           gate_saturation, recurrent_spectra, spectral_radius)

__all__ = [
    "GradientMonitor", "GradientProfile", "LayerVerdict", "gradient_profile", "linear_probe", "plot_profiles",
    "step_states", "summary_lines",
    "ClipStats", "GateSaturation", "RecurrentSpectrum", "cell_gates", "clip_stats", "gate_saturation",
    "recurrent_spectra", "spectral_radius",
]
