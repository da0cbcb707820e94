"""Looking inside representations: inversion, interpolation, feature visualisation and addition
(Engstrom et al. 2019), class-conditional generation (Santurkar et al. 2019), units versus directions
(Szegedy et al. 2014), saliency maps and their sanity checks (Adebayo et al. 2018), and transfer
learning from a source representation (Salman et al. 2020).

Each is the shared input-optimisation loop (or a plain forward pass) with a different objective;
see each module's docstring for the paper's settings and our defaults.
"""

from .generate import ClassGaussians, GenerationResult, fit_class_gaussians, generate
from .inversion import (InversionResult, compare_inversions, interpolate, interpolate_pairs, invert, match_goal,
                        noise_seeds)
from .saliency import (METHODS as SALIENCY_METHODS, cascading_randomization, edge_detector, gradient_times_input,
                       input_gradient, saliency, smooth_grad, spearman, ssim)
from .transfer import adapt_images, fine_tune, linear_probe, transfer_table
from .units import layer_activations, units_vs_directions
from .visualize import VisualizationResult, add_feature, random_directions, visualize

__all__ = [
    "SALIENCY_METHODS",
    "ClassGaussians",
    "GenerationResult",
    "InversionResult",
    "VisualizationResult",
    "adapt_images",
    "add_feature",
    "cascading_randomization",
    "compare_inversions",
    "edge_detector",
    "fine_tune",
    "fit_class_gaussians",
    "generate",
    "gradient_times_input",
    "input_gradient",
    "interpolate",
    "interpolate_pairs",
    "invert",
    "layer_activations",
    "linear_probe",
    "match_goal",
    "noise_seeds",
    "random_directions",
    "saliency",
    "smooth_grad",
    "spearman",
    "ssim",
    "transfer_table",
    "units_vs_directions",
    "visualize",
]
