"""Bad input is one line naming the value and the fix (`errors.InputError`), raised before
anything is trained or written; at the command line `lmjax: error: ...`, exit status 2, no
traceback unless --verbose. Most cases run in-process; a few go through the scripts for the
format (the unknown config key's is in test_train.py)."""

import logging
import os
import signal

import pytest

from configs import bert_tiny_wikitext, gpt_shakespeare_char, sst2_finetune
from lmjax import config_checks, errors, sampling, tasks
from lmjax import workdir as workdir_lib
from lmjax.data import corpora, tokenizers
from lmjax.train import build, inference, loop, predict
from tests.conftest import CONFIGS, override, run_script, tiny_config, unwritable


def _raises(config, workdir, match, error=errors.InputError):
    """Training `config` raises `error` whose one-line message matches, having written no
    config.json (the first thing a run writes)."""
    with pytest.raises(error, match=match) as e:
        loop.train_and_evaluate(config, workdir)
    assert "\n" not in str(e.value)
    assert not os.path.exists(os.path.join(workdir, workdir_lib.CONFIG))
    return str(e.value)


def _assert_cli_error(proc, line, status=2):
    assert proc.returncode == status, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == f"lmjax: error: {line}"


# ---- Config values out of range: before any data is read ----


@pytest.mark.parametrize(
    "key,value,match",
    [
        ("batch_size", 0, r"^config.batch_size=0 must be ≥ 1: examples per step"),
        ("seq_len", 0, r"^config.seq_len=0 must be ≥ 1: tokens per clm example"),
        ("num_train_steps", 0, r"^config.num_train_steps=0 must be ≥ 1"),
        ("learning_rate", -1e-3, r"^config.learning_rate=-0.001 must be a finite number > 0"),
        ("learning_rate", float("nan"), r"^config.learning_rate=nan must be a finite number"),
        ("warmup_steps", -1, r"^config.warmup_steps=-1 must be ≥ 0"),
        ("eval_steps", 0, r"^config.eval_steps=0 must be ≥ 1, or -1"),
        ("checkpoint_every_steps", 0, r"^config.checkpoint_every_steps=0 must be ≥ 1"),
        ("model.dropout_rate", 1.0, r"^config.model.dropout_rate=1.0 must be in \[0, 1\)"),
        ("model.num_heads", 3, r"^config.model.emb_dim=32 does not divide into .*num_heads=3"),
        ("model.dtype", "float16", r"^config.model.dtype='float16' must be one of"),
        ("grad_accum_steps", 3, r"^config.batch_size=8 does not split into .*=3 micro-batches"),
        ("data.train_fraction", 1.0, r"^config.data.train_fraction=1.0 must be in \(0, 1\)"),
    ],
)
def test_config_value_out_of_range(key, value, match, workdir):
    _raises(tiny_config(**{key: value}), workdir, match)
    assert not os.path.exists(workdir)


@pytest.mark.parametrize(
    "module,key,value,match",
    [
        (bert_tiny_wikitext, "seq_len", 4, r"seq_len=4 must be ≥ 5: tokens per mlm_nsp example"),
        (bert_tiny_wikitext, "data.masked_lm_prob", 0.0, r"masked_lm_prob=0.0 must be in \(0, 1\]"),
        (sst2_finetune, "num_classes", 0, r"num_classes=0 must be ≥ 1"),
    ],
)
def test_task_config_value_out_of_range(module, key, value, match):
    with pytest.raises(errors.InputError, match=match):
        tasks.resolve_config(override(module.get_config("test"), **{key: value}))


def test_warmup_longer_than_the_run_warns(caplog):
    caplog.set_level(logging.WARNING)
    config_checks.check(override(sst2_finetune.get_config(), num_train_steps=200))
    assert "config.warmup_steps=600 ≥ config.num_train_steps=200" in caplog.text


# ---- Data ----


def _corpus(tmp_path, content):
    path = tmp_path / "corpus.txt"
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return str(path)


def test_binary_corpus_names_the_file(tmp_path, workdir):
    path = _corpus(tmp_path, bytes(range(256)))
    _raises(tiny_config(**{"data.path": path}), workdir, f"^data file '{path}' is binary")


def test_non_utf8_corpus_names_the_file_and_the_byte(tmp_path, workdir):
    path = _corpus(tmp_path, "Café au lait\n".encode("latin-1"))
    match = f"^data file '{path}' is not UTF-8 text \\(byte 0xe9 at offset 3\\)"
    _raises(tiny_config(**{"data.path": path}), workdir, match)


def test_empty_corpus(tmp_path, workdir):
    path = _corpus(tmp_path, "\n \n")
    _raises(tiny_config(**{"data.path": path}), workdir, f"^data file '{path}' is empty")


def test_corpus_shorter_than_a_window(tmp_path, workdir):
    path = _corpus(tmp_path, "hello world")
    message = _raises(tiny_config(**{"data.path": path}), workdir, "fewer than one window")
    assert message == (
        f"data.path='{path}' has 11 tokens, 9 of them for training (data.train_fraction=0.9): "
        "fewer than one window of seq_len + 1 = 17: give a longer corpus or a smaller seq_len"
    )


def test_held_out_split_shorter_than_a_window_fails_at_the_start(tmp_path, workdir):
    path = _corpus(tmp_path, "abcdefghij" * 10)
    message = _raises(tiny_config(**{"data.path": path}), workdir, "held out for eval")
    assert "10 of them held out" in message and "lower data.train_fraction or seq_len" in message


def _tsv(tmp_path, name, lines):
    path = tmp_path / name
    path.write_text("".join(line + "\n" for line in lines))
    return str(path)


def _sst2(tmp_path, train, dev):
    config = sst2_finetune.get_config("test")
    config.data.train_path = _tsv(tmp_path, "train.tsv", ["sentence\tlabel", *train])
    config.data.eval_path = _tsv(tmp_path, "dev.tsv", ["sentence\tlabel", *dev])
    config.data.vocab_path = "wikitext2_vocab_8k"
    return config


def test_eval_tsv_with_only_a_header(tmp_path, workdir):
    config = _sst2(tmp_path, ["a fine film\t1", "a dull film\t0"], [])
    _raises(config, workdir, r"dev.tsv: no examples after line 1 \(a header only\)")


def test_label_outside_the_label_set_names_file_and_line(tmp_path, workdir):
    config = _sst2(tmp_path, ["a fine film\t1", "a dull film\t2"], ["ok\t1"])
    _raises(config, workdir, r"train.tsv: line 3: unknown sst2 label '2': use one of \['0', '1'\]")


# ---- init_from: checked before anything is read or written ----


def _fake_workdir(path, config, checkpoint=True):
    """A workdir as `check_init_from` sees it: config.json and (empty) checkpoint folders."""
    workdir_lib.save_config(config, path)
    if checkpoint:
        os.makedirs(os.path.join(path, workdir_lib.CHECKPOINTS, "6"))
    return str(path)


def test_init_from_a_gpt_workdir_for_fine_tuning(tmp_path, workdir):
    gpt = _fake_workdir(tmp_path / "gpt", gpt_shakespeare_char.get_config())
    config = override(sst2_finetune.get_config("test"), init_from=gpt)
    _raises(config, workdir, f"^init_from={gpt} trained task 'clm'; fine-tuning needs a BERT")


def test_init_from_a_bert_workdir_for_a_gpt(tmp_path, workdir):
    bert = _fake_workdir(tmp_path / "bert", bert_tiny_wikitext.get_config())
    _raises(tiny_config(init_from=bert), workdir, "trained task 'mlm_nsp'; fine-tuning needs a GPT")


def test_init_from_that_does_not_exist(tmp_path, workdir):
    missing = str(tmp_path / "missing")
    config = tiny_config(init_from=missing)
    _raises(config, workdir, f"^config.init_from='{missing}' does not exist", errors.MissingInput)
    assert not os.path.exists(missing)


def test_init_from_without_a_checkpoint_is_left_as_it_was(tmp_path, workdir):
    empty = _fake_workdir(tmp_path / "new", gpt_shakespeare_char.get_config(), checkpoint=False)
    _raises(tiny_config(init_from=empty), workdir, "has no checkpoint", errors.MissingInput)
    assert os.listdir(empty) == [workdir_lib.CONFIG]


# ---- The environment: a workdir the run cannot use, damaged files, outputs ----

_UNWRITABLE = r"\((Permission denied|Operation not permitted)\): make it writable"


def test_a_workdir_that_is_a_file(tmp_path):
    file = tmp_path / "run"
    file.write_text("notes")
    fix = "give a --workdir that is a folder or does not exist yet"
    _raises(tiny_config(), str(file), f"^--workdir {file}, is a file, not a folder: {fix}$")
    inside = file / "run"
    _raises(tiny_config(), str(inside), f"^a parent of --workdir, {file}, is a file, not a folder")


def test_a_workdir_in_a_folder_that_cannot_be_written(tmp_path):
    parent = tmp_path / "shared"
    parent.mkdir()
    with unwritable(parent):
        _raises(tiny_config(), str(parent / "run"), f"^cannot write {parent} {_UNWRITABLE}")
    assert os.listdir(parent) == []


def test_ctrl_c_during_training_saves_and_says_how_to_resume(workdir, monkeypatch):
    """The exact line (tests/test_faults.py runs it in a subprocess with a real Ctrl-C)."""
    write = loop._write_metrics

    def ctrl_c_at_step_4(writer, manager, s, metrics):
        write(writer, manager, s, metrics)
        if s == 4:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(loop, "_write_metrics", ctrl_c_at_step_4)
    with pytest.raises(errors.Interrupted) as e:
        loop.train_and_evaluate(tiny_config(log_every_steps=1), workdir)
    assert str(e.value) == (
        "stopped by Ctrl-C after step 4 (checkpoint saved): rerun the same command to resume"
    )
    assert workdir_lib.checkpoint_steps(workdir) == [3, 4]


def test_a_checkpoints_folder_that_turns_unwritable_is_one_line(workdir, monkeypatch):
    probe = workdir_lib.probe_folder

    def checkpoints_unwritable(folder):
        if str(folder).endswith(workdir_lib.CHECKPOINTS):
            raise PermissionError(13, "Permission denied", str(folder))
        probe(folder)

    monkeypatch.setattr(workdir_lib, "probe_folder", checkpoints_unwritable)
    with pytest.raises(errors.SaveFailed) as e:
        loop.train_and_evaluate(tiny_config(), workdir)
    checkpoints = os.path.abspath(os.path.join(workdir, workdir_lib.CHECKPOINTS))
    assert str(e.value) == (
        f"cannot save checkpoint 6: {checkpoints}: Permission denied; make it writable; the last "
        f"good checkpoint is step 3 in {checkpoints}: a rerun resumes there once that is fixed"
    )


def test_a_damaged_config_json_is_one_line(tmp_path):
    workdir = _fake_workdir(tmp_path / "run", gpt_shakespeare_char.get_config())
    config_json = os.path.join(workdir, workdir_lib.CONFIG)
    with open(config_json, "w") as f:
        f.write('{"task": "clm",')
    damaged = rf"^{config_json} is damaged \(Expecting property name enclosed in double quotes"
    with pytest.raises(errors.InputError, match=damaged + ".*: restore it from a copy, or move it"):
        loop.train_and_evaluate(tiny_config(), workdir)
    with pytest.raises(errors.InputError, match=damaged):
        inference.load_model(workdir, task="clm")


def test_remat_policies_that_cannot_run(workdir):
    config = tiny_config(
        **{"model.remat": True, "model.remat_policy": "offload_dot_with_no_batch_dims"}
    )
    _raises(config, workdir, "^config.model.remat_policy='offload_dot_with_no_batch_dims' must be "
            "one of nothing_saveable, everything_saveable, dots_saveable, ")  # fmt: skip
    config.model.remat_policy = "save_only_these_names"  # and no names
    _raises(config, workdir, "^config.model.remat_policy='save_only_these_names' keeps the tensors "
            "named in config.model.remat_names, which is empty: name some of qkv, attention, "
            "mlp_hidden")  # fmt: skip
    config.model.remat_names = ("qkv", "logits")
    _raises(config, workdir, r"^config.model.remat_names=\('qkv', 'logits'\) must be a tuple of "
            "qkv, attention, mlp_hidden")  # fmt: skip
    config.model.remat_names = ("qkv",)
    config.model.remat_policy = "save_and_offload_only_these_names"
    _raises(config, workdir, "^config.model.remat_policy='save_and_offload_only_these_names' "
            "offloads to host memory, which GPUs and TPUs have and this run's devices \\(cpu\\) "
            "do not: use save_only_these_names")  # fmt: skip


def test_a_gpu_kernel_on_a_cpu_fails_before_any_data_is_read(workdir):
    """It was `RuntimeError: cuDNN is not detected.` at the first step, after the data."""
    config = tiny_config(**{"model.attention_impl": "cudnn", "data.path": "/no/such/corpus.txt"})
    _raises(config, workdir, "^config.model.attention_impl='cudnn' needs NVIDIA GPUs and this "
            "run's devices are cpu: use auto")  # fmt: skip


def test_predictions_check_their_output_before_anything_is_computed(tmp_path):
    for output, match in [
        (tmp_path, f"^--output={tmp_path} is a folder: give a file name, e.g. {tmp_path}/"),
        (tmp_path / "no" / "p.tsv", f"^--output={tmp_path}/no/p.tsv: the folder {tmp_path}/no "
         rf"does not exist: make it \(mkdir -p {tmp_path}/no\)"),
    ]:  # fmt: skip
        with pytest.raises(errors.InputError, match=match):  # before the workdir is read
            predict.write_predictions("/no/such/run", "glue_rte_dev", str(output))


def test_a_folder_of_plain_text_names_the_way_to_train_on_it(tmp_path, workdir):
    folder = tmp_path / "texts"
    folder.mkdir()
    (folder / "a.txt").write_text("Some plain text. " * 100)
    match = r"is read as Project Gutenberg books; .* for plain text, give one file \(e.g. cat "
    _raises(tiny_config(**{"data.path": str(folder)}), workdir, match + r"FOLDER/\*.txt > corpus")


def test_a_lock_file_lmjax_did_not_write_is_replaced_with_a_warning(tmp_path, caplog):
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / workdir_lib.LOCK).write_text("garbage")
    caplog.set_level(logging.WARNING)
    with workdir_lib.lock(str(workdir)):
        assert workdir_lib.read_json(workdir / workdir_lib.LOCK)["pid"] == os.getpid()
    assert f"replacing {workdir}/lock: not a lock an lmjax run wrote, or cut short" in caplog.text
    assert "None" not in caplog.text


# ---- Memory: a step that cannot fit names batch_size and seq_len ----


def test_step_too_large_for_memory_names_batch_size_and_seq_len(workdir, monkeypatch):
    monkeypatch.setattr(build, "_free_memory", lambda device: 1024)
    with pytest.raises(errors.InputError, match="free in host memory: lower") as e:
        loop.train_and_evaluate(tiny_config(), workdir)
    assert str(e.value).startswith("the train step of config.batch_size=8, seq_len=16 needs ")


# ---- Sampling ----


@pytest.mark.parametrize(
    "options,match",
    [
        (dict(temperature=-1.0), r"^temperature=-1.0 must be finite and ≥ 0"),
        (dict(top_p=0.0), r"^top_p=0.0 must be in \(0, 1\]"),
        (dict(top_p=1.5), r"^top_p=1.5 must be in \(0, 1\]"),
        (dict(top_k=-1), r"^top_k=-1 must be ≥ 0"),
        (dict(max_new_tokens=0), r"^max_new_tokens=0 must be ≥ 1"),
        (dict(num_samples=0), r"^num_samples=0 must be ≥ 1"),
    ],
)
def test_sampling_option_out_of_range(options, match):
    with pytest.raises(errors.InputError, match=match):
        sampling.check_options(**{"max_new_tokens": 10, **options})


def test_prompt_the_tokenizer_cannot_encode():
    tokenizer = tokenizers.CharTokenizer.from_text("abc ")
    with pytest.raises(errors.InputError, match="the prompt 'a€' does not encode: character '€'"):
        inference.encode_prompt(tokenizer, "a€")


def test_sampling_needs_a_trained_gpt_workdir(tmp_path):
    bert = _fake_workdir(tmp_path / "bert", bert_tiny_wikitext.get_config())
    with pytest.raises(errors.InputError, match="trained task 'mlm_nsp'; this needs task 'clm'"):
        inference.check_workdir(bert, task="clm")
    fresh = _fake_workdir(tmp_path / "fresh", gpt_shakespeare_char.get_config(), checkpoint=False)
    with pytest.raises(errors.MissingInput, match="has no checkpoint yet"):
        inference.load_model(fresh, task="clm")
    assert os.listdir(fresh) == [workdir_lib.CONFIG]  # no checkpoints/ made by reading it
    missing = str(tmp_path / "missing")
    with pytest.raises(errors.MissingInput, match=f"'{missing}' does not exist"):
        inference.load_model(missing)
    assert not os.path.exists(missing)


# ---- At the command line ----


def _train(workdir, *args, check=False):
    config = f"--config={os.path.join(CONFIGS, 'gpt_shakespeare_char.py')}:test"
    return run_script("train.py", config, f"--workdir={workdir}", *args, check=check)


def test_cli_config_value_out_of_range(workdir):
    _assert_cli_error(
        _train(workdir, "--config.seq_len=0"),
        "config.seq_len=0 must be ≥ 1: tokens per clm example (--config.seq_len)",
    )
    _assert_cli_error(
        _train(workdir, "--config.num_train_steps=0"),
        "config.num_train_steps=0 must be ≥ 1: the run's length in steps "
        "(--config.num_train_steps)",
    )
    assert not os.path.exists(workdir)


def test_cli_data_errors(tmp_path, workdir):
    _assert_cli_error(
        _train(workdir, "--config.data.path=/no/such/corpus.txt"),
        "data file '/no/such/corpus.txt' not found: use an existing file or one of the embedded "
        f"names {sorted(corpora.EMBEDDED)}",
    )
    binary = _corpus(tmp_path, b"ROMEO\x00\x01")
    _assert_cli_error(
        _train(workdir, f"--config.data.path={binary}"),
        f"data file '{binary}' is binary (a NUL byte at offset 5): give a UTF-8 text file",
    )


def test_cli_verbose_adds_the_traceback(workdir):
    proc = _train(workdir, "--config.batch_size=0", "--verbose")
    assert proc.returncode == 2
    assert "Traceback" in proc.stderr and "config_checks.py" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("lmjax: error: config.batch_size=0")


def test_cli_sample_options_fail_before_the_model_loads():
    proc = run_script("sample.py", "--workdir=/no/such/run", "--temperature=-1", check=False)
    _assert_cli_error(proc, "temperature=-1.0 must be finite and ≥ 0 (0: greedy)")


def test_cli_list_flags_of_numbers_name_the_flag():
    proc = run_script("glue.py", "--init_from=", "--workdir=/tmp/unused", "--learning_rates=abc",
                      check=False)  # fmt: skip
    _assert_cli_error(proc, "flag --learning_rates=['abc']: give numbers, e.g. 1e-4,3e-4")
