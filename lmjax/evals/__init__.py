"""Zero-shot evaluations of trained workdirs: no training, only the inference path
(`lmjax.train.inference.load_model`) and sentence scores (`scoring`). `blimp`: BLiMP minimal
pairs (Warstadt et al. 2020)."""
