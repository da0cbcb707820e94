import sys, time, torch
torch.set_num_threads(1)
from advfeatures.progress import set_progress_enabled; set_progress_enabled(False)
from advfeatures.data import load_digits
from advfeatures.models import build_model, save_model
from advfeatures.train import TrainConfig, AdversaryConfig, train_model
train, _ = load_digits()
torch.manual_seed(0)
m = build_model("mlp", (1, 8, 8), 10, hidden=(256, 256))
cfg = TrainConfig(epochs=30, batch_size=64, lr=0.05, crop_padding=0, flip=False, objective="ibp",
                  adversary=AdversaryConfig(norm="Linf", eps=0.1))
t = time.perf_counter(); train_model(m, train, cfg); print("train seconds", time.perf_counter() - t)
save_model(m, sys.argv[1])
