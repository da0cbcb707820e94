"""Looking inside representations: inversion, interpolation, feature visualisation and addition
(Engstrom et al. 2019), class-conditional generation (Santurkar et al. 2019), units versus directions
(Szegedy et al. 2014), saliency maps and their sanity checks (Adebayo et al. 2018), and transfer
learning from a source representation (Salman et al. 2020).

Each is the shared input-optimisation loop (or a plain forward pass) with a different objective;
see each module's docstring for the paper's settings and our defaults. :mod:`.studies` holds the
experiments the command line runs (one call each: data in, figures and a JSON-ready dict out).
"""

from .generate import ClassGaussians, GenerationResult, fit_class_gaussians, generate
from .inversion import (InversionResult, compare_inversions, interpolate, interpolate_pairs, invert, match_goal,
                        noise_seeds)
from .saliency import (METHODS as SALIENCY_METHODS, cascading_randomization, edge_detector, gradient_times_input,
                       input_gradient, saliency, smooth_grad, spearman, ssim)
from .transfer import adapt_images, fine_tune, linear_probe, transfer_table
from .studies import (class_generation, feature_visualization, generate_per_class, saliency_study, transfer_study,
                      visualization_panels)
from .units import layer_activations, live_units, units_vs_directions
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
    "class_generation",
    "compare_inversions",
    "edge_detector",
    "feature_visualization",
    "fine_tune",
    "fit_class_gaussians",
    "generate",
    "generate_per_class",
    "gradient_times_input",
    "input_gradient",
    "interpolate",
    "interpolate_pairs",
    "invert",
    "layer_activations",
    "linear_probe",
    "live_units",
    "match_goal",
    "noise_seeds",
    "random_directions",
    "saliency",
    "saliency_study",
    "smooth_grad",
    "spearman",
    "ssim",
    "transfer_study",
    "transfer_table",
    "units_vs_directions",
    "visualization_panels",
    "visualize",
]
