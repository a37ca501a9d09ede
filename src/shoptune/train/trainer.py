"""`shoptune train CONFIG --out DIR`: one model, LoRA-tuned on a multi-task mixture.

The Hugging Face stack does the work: transformers' Trainer (checkpoints, resume, evaluation,
logging, DDP/FSDP/DeepSpeed under `accelerate launch`), PEFT for LoRA/DoRA/rsLoRA/QLoRA. shoptune
adds the ShopBench rendering (the same prompt as evaluation, the answer in the parsers' format),
loss on the answer tokens only, and packing: a batch's examples are laid end to end in one row, with
position ids restarting per example, so attention never crosses an example boundary and no compute
is spent on padding. The output layer runs only where the loss is (the answer tokens): with a
50k-word vocabulary, logits for every prompt token would be most of a step's memory.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shoptune.adapters import interpolate
from shoptune.config import dump_config
from shoptune.errors import ShoptuneError, require_extra
from shoptune.files import atomic_write_text, folder_in_place, read_state, write_json
from shoptune.hub import BASE_RECORD, load_causal_lm, portable_name, require_adapter, with_adapter
from shoptune.provenance import provenance
from shoptune.runs import Layout, RunFolder, content, folder_content, settings, source
from shoptune.schema import Example, read_examples
from shoptune.tasks.render import answer_text, render_prompt
from shoptune.train.config import TrainConfig
from shoptune.train.distributed import agree, check_launch, fsdp_on_cpu, how_it_ran, leave, world_size

# The model being trained, its tokenizer, the step and the folder for the step's answers (None on all but the main
# process) -> metrics.
Validator = Callable[[Any, Any, int, Path | None], dict[str, float]]

ADAPTER = "adapter"
RUN_RECORD = "run.json"  # what decided the run's weights, compared by a rerun before it resumes
SUMMARY = "train_summary.json"  # written last: a finished run
LOSS_RECORD = "shoptune_loss.json"  # in each checkpoint: the summed step losses up to it
VALIDATION_ANSWERS = "shopbench_validation"  # the validator's questions, and its answers and scores per step
STEPS = "steps"  # the adapters of `keep_steps`, as step-N
TRAIN = Layout(
    "train",
    frozenset(
        {RUN_RECORD, SUMMARY, ADAPTER, "config.yaml", "checkpoints", "logs", "mixture", VALIDATION_ANSWERS, STEPS}
    ),
    identity=RUN_RECORD,
    finished=SUMMARY,
    made="a run trained",
)


def mixture_folder(config: TrainConfig, out: Path) -> Path:
    """A mixture given as a spec (YAML) is built into DIR/mixture first; a folder is used as it is."""
    assert config.mixture is not None
    if config.mixture.suffix not in (".yaml", ".yml"):
        return config.mixture
    from shoptune.config import load_config
    from shoptune.data.build import cached_mixture
    from shoptune.data.spec import MixtureSpec

    return cached_mixture(load_config(MixtureSpec, config.mixture), out / "mixture")


def stratified(examples: list[Example], n: int) -> list[Example]:
    """n examples taken in turn from each subtask, so a capped validation set still covers every subtask."""
    by_task: dict[str, list[Example]] = {}
    for ex in examples:
        by_task.setdefault(ex.task_name, []).append(ex)
    picked: list[Example] = []
    for row in itertools.zip_longest(*by_task.values()):
        picked.extend(ex for ex in row if ex is not None)
    return picked[:n]


def load_examples(config: TrainConfig) -> tuple[list[Example], list[Example]]:
    """(train, validation) examples from a mixture folder or from JSON Lines files."""
    if config.data is not None:
        train = read_examples(config.data)
        held_out = read_examples(config.eval_data) if config.eval_data else []
        return train, stratified(held_out, config.max_eval_examples)
    import datasets

    from shoptune.schema import from_row

    if not (config.mixture / "dataset_dict.json").is_file():
        raise ShoptuneError(f"mixture {config.mixture}: not a folder written by `shoptune data build`")
    mixture = datasets.load_from_disk(str(config.mixture))
    train = [from_row(row) for row in mixture["train"]]
    if config.eval_data:
        held_out = read_examples(config.eval_data)
    else:
        held_out = [from_row(row) for row in mixture["validation"]] if "validation" in mixture else []
    return train, stratified(held_out, config.max_eval_examples)


def encode(example: Example, tokenizer: Any, config: TrainConfig) -> dict[str, list[int]]:
    """Prompt tokens are masked out of the loss; the answer ends with EOS so the model learns to stop."""
    prompt = render_prompt(
        example.input_field, tokenizer, system_prompt=config.system_prompt, chat_template=config.chat_template
    )
    prompt_ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    answer_ids = tokenizer(answer_text(example.output_field, example.task_type), add_special_tokens=False)["input_ids"]
    answer_ids = [*answer_ids, tokenizer.eos_token_id][: config.max_length // 2]
    prompt_ids = prompt_ids[-(config.max_length - len(answer_ids)) :]  # keep the end of a long prompt
    return {
        "input_ids": prompt_ids + answer_ids,
        "labels": [-100] * len(prompt_ids) + answer_ids,
    }


def count_parameters(model: Any) -> dict[str, int]:
    """Parameters by their whole size: under DeepSpeed ZeRO-3 each process holds an empty placeholder of a
    partitioned parameter, whose `ds_numel` is its size."""
    trainable = sum(_numel(p) for p in model.parameters() if p.requires_grad)
    total = sum(_numel(p) for p in model.parameters())
    return {"trainable": trainable, "total": total}


def _numel(parameter: Any) -> int:
    return int(getattr(parameter, "ds_numel", None) or parameter.numel())


def load_model(config: TrainConfig, device: Any = None) -> tuple[Any, Any]:
    """Base model plus fresh LoRA weights; seeded first, so the same config gives the same initial adapter. A 4-bit
    model is placed on `device` (this process's GPU), as accelerate requires of each process's quantised copy."""
    import torch
    from transformers import set_seed
    from transformers.integrations import is_deepspeed_zero3_enabled

    set_seed(config.seed)
    kwargs: dict[str, Any] = {}
    if use_bf16(config):
        kwargs["dtype"] = torch.bfloat16
    if config.method == "qlora":
        if not torch.cuda.is_available():
            raise ShoptuneError("method qlora needs a CUDA GPU and bitsandbytes; use method: lora on CPU")
        require_extra("bitsandbytes", "gpu", "method qlora")
        device = device if device is not None else torch.cuda.current_device()
        kwargs.update(quantised(device, zero3=is_deepspeed_zero3_enabled()))
    model, tokenizer = load_causal_lm(config.model, config.allow_download, **kwargs)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    # Without a KV cache, transformers builds block-diagonal masks from restarting position ids: packed
    # examples then never attend to each other (sdpa, eager and flash attention alike).
    model.config.use_cache = False
    if config.method == "full":
        return model, tokenizer
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if config.method == "qlora":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=config.gradient_checkpointing)
    lora = LoraConfig(
        r=config.lora.rank,
        lora_alpha=config.lora_alpha(),
        lora_dropout=config.lora.dropout,
        target_modules=config.lora.target_modules,
        use_rslora=config.lora.rslora,
        use_dora=config.lora.dora,
        task_type="CAUSAL_LM",
    )
    try:
        return get_peft_model(model, lora), tokenizer
    except ValueError as exc:  # e.g. target_modules that name no layer of this model
        raise ShoptuneError(f"LoRA on {config.model!r}: {str(exc).strip().splitlines()[0]}") from None


def quantised(device: Any, *, zero3: bool) -> dict[str, Any]:
    """`from_pretrained` arguments for a 4-bit (QLoRA) model. Each process's copy goes on its own GPU (`device_map`),
    except under DeepSpeed ZeRO-3, which places the weights itself and refuses a device_map."""
    import torch
    from transformers import BitsAndBytesConfig

    kwargs: dict[str, Any] = {
        "quantization_config": BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
            bnb_4bit_quant_storage=torch.bfloat16,  # lets FSDP and ZeRO-3 shard the 4-bit weights like the others
        )
    }
    if not zero3:
        kwargs["device_map"] = {"": device}
    return kwargs


# The fused attention kernels torch dispatches scaled_dot_product_attention to, on every device.
ATTENTION_KERNELS = (
    "_scaled_dot_product_flash_attention",
    "_scaled_dot_product_flash_attention_for_cpu",
    "_scaled_dot_product_efficient_attention",
    "_scaled_dot_product_cudnn_attention",
    "_scaled_dot_product_fused_attention_overrideable",
)


def checkpoint_activations(model: Any, *, selective: bool) -> None:
    """Recompute each decoder layer's activations in the backward pass instead of keeping them.

    Selective (torch's selective activation checkpointing): the attention kernel's output is kept and only the
    rest is recomputed. Packed examples attend within a row-long block-diagonal mask, so attention is the
    costliest part of the recompute, while its output is one hidden-size tensor per layer.
    """
    import functools

    import torch
    from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts

    kwargs: dict[str, Any] = {"use_reentrant": False}
    if selective:
        keep = {getattr(torch.ops.aten, name).default for name in ATTENTION_KERNELS if hasattr(torch.ops.aten, name)}

        def policy(ctx: Any, op: Any, *args: Any, **op_kwargs: Any) -> Any:
            return CheckpointPolicy.MUST_SAVE if op in keep else CheckpointPolicy.PREFER_RECOMPUTE

        kwargs["context_fn"] = functools.partial(create_selective_checkpoint_contexts, policy)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    enable = getattr(base, "activation_checkpointing_enable", None)  # transformers >= 5.x; the older name before
    if enable is not None:
        enable(activation_checkpointing_kwargs=kwargs)
    else:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def answer_only_loss(
    model: Any, inputs: dict[str, Any], num_items_in_batch: Any = None, label_smoothing: float = 0.0
) -> Any:
    """Next-token cross-entropy over the answer tokens, with the output layer applied at those positions only.

    Token t+1 is predicted at position t, so the kept positions are those whose next label is not -100;
    the sum is divided by the answer tokens of the whole accumulated batch when the Trainer counts them
    (exact gradient accumulation), else by this batch's. `label_smoothing` spreads that share of each target's
    probability over the vocabulary (torch's cross-entropy), so a model is not pushed to certainty on a label.
    """
    import torch

    labels = inputs.pop("labels")
    targets = labels[:, 1:]
    keep = (targets != -100).any(dim=0).nonzero().squeeze(-1)
    logits = model(**inputs, logits_to_keep=keep).logits.float()
    chosen = targets[:, keep]
    loss = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]),
        chosen.reshape(-1),
        ignore_index=-100,
        reduction="sum",
        label_smoothing=label_smoothing,
    )
    count = num_items_in_batch if num_items_in_batch is not None else (chosen != -100).sum()
    return loss / count


def make_trainer(*args: Any, **kwargs: Any) -> Any:
    """transformers' Trainer with the answer-only loss, and FSDP that shards on CPUs too."""
    from transformers import Trainer

    class AnswerOnlyTrainer(Trainer):
        loss_is_scaled_for_ga = True  # divided by the accumulated batch's answer tokens, as the models' own loss is
        earlier_loss = 0.0  # the summed step losses before this session's first step (read from its checkpoint)
        validator: Validator | None = None  # ShopBench-scored answers at each evaluation (evaluate.during_training)
        label_smoothing = 0.0  # the answer-only loss's (TrainConfig.label_smoothing)

        def _save_checkpoint(self, model: Any, trial: Any) -> None:
            """Each checkpoint also keeps the summed loss of every step so far, so a resumed run's train_loss is
            over the whole run (transformers' own is over the steps since the resume)."""
            super()._save_checkpoint(model, trial)
            if self.is_world_process_zero():
                session = self._total_loss_scalar + float(self._tr_loss.item())
                folder = Path(self.args.output_dir) / f"checkpoint-{self.state.global_step}"
                summed = {"step": self.state.global_step, "summed_loss": self.earlier_loss + session}
                atomic_write_text(folder / LOSS_RECORD, json.dumps(summed) + "\n")

        def evaluate(self, *args: Any, **kwargs: Any) -> dict[str, float]:
            """The validation loss, and with a validator the ShopBench scores of generated answers, logged and
            returned together, so the checkpoint can be chosen by either."""
            metrics = super().evaluate(*args, **kwargs)
            if self.validator is not None:
                run = Path(self.args.output_dir).parent
                folder = run / VALIDATION_ANSWERS if self.is_world_process_zero() else None
                model = self.accelerator.unwrap_model(self.model)
                scored = self.validator(model, self.processing_class, self.state.global_step, folder)
                extra = {f"eval_shopbench_{name}": value for name, value in scored.items()}
                self.log(extra)
                metrics.update(extra)
            return metrics

        def create_accelerator_and_postprocess(self) -> None:
            super().create_accelerator_and_postprocess()
            if fsdp_on_cpu(self.accelerator):
                self.is_fsdp_enabled = True

        def compute_loss(
            self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
        ) -> Any:
            loss = answer_only_loss(model, dict(inputs), num_items_in_batch, self.label_smoothing)
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                # num_items_in_batch counts every process's answer tokens and DDP averages the gradients, so
                # each process's share is scaled back up, exactly as Trainer does for a model's own loss.
                loss = loss * self.accelerator.num_processes
            return (loss, {}) if return_outputs else loss

    return AnswerOnlyTrainer(*args, **kwargs)


def keeper(steps: set[int], folder: Path) -> Any:
    """A callback that saves at each of `steps` and copies that checkpoint's adapter into folder/step-N, where
    checkpoint rotation never removes it (a resumed run keeps what it copied before)."""
    import shutil

    from transformers import TrainerCallback

    class KeepSteps(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            if state.global_step in steps:
                control.should_save = True
            return control

        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            target = folder / f"step-{state.global_step}"
            if state.global_step in steps and state.is_world_process_zero and not target.exists():
                checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
                with folder_in_place(target) as tmp:
                    for name in ("adapter_model.safetensors", "adapter_config.json"):
                        shutil.copy(checkpoint / name, tmp / name)
            return control

    return KeepSteps()


def use_bf16(config: TrainConfig) -> bool:
    import torch

    if config.bf16 == "on":
        return True
    return config.bf16 == "auto" and torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def train(
    config: TrainConfig,
    out: Path,
    *,
    resume: bool = True,
    progress: bool = True,
    validator: Callable[[list[Example]], Validator] | None = None,
) -> dict[str, Any]:
    """Train into `out`, one run at a time; a rerun with the same settings and data resumes from its checkpoint.
    Under a launcher, the main process holds the folder and decides for all (see `train.distributed`).
    `validator` makes, from the sampled validation questions, what scores generated answers at each evaluation;
    it is needed when config.shopbench_eval_examples is set (callers above training pass
    `evaluate.during_training.validator_for(config)`). A finished run's summary comes back with `finished_earlier`
    set, and nothing is trained."""
    if config.shopbench_eval_examples and validator is None:
        raise ShoptuneError("shopbench_eval_examples: this caller gives no way to score answers during training")
    check_launch()
    record = fingerprint(config)  # of the config as given: a mixture spec, not the folder it is built into
    with contextlib.ExitStack() as held:

        def decide() -> dict[str, Any] | None:
            for name in ("mixture", "data", "eval_data"):  # every process fails together, not each on its own
                path = getattr(config, name)
                if path is not None and not path.exists():
                    raise ShoptuneError(f"{name} {path}: no such file or folder")
            folder = held.enter_context(RunFolder.open(out, TRAIN, record))  # held until training ends
            if resume and folder.was_finished:
                return {**read_state(out / SUMMARY), "finished_earlier": True}  # nothing to redo
            return None

        finished = agree(decide, timeout=config.ddp_timeout)  # the first collective: it sets the group's timeout
        if finished is not None:
            leave()
            return finished
        return _train(config, out, record, resume=resume, progress=progress, validator=validator)


# Settings that change how a run is watched or kept, not what it learns: a resumed run may change them.
UNLEARNED = frozenset(
    {
        "report_to",
        "logging_steps",
        "eval_steps",
        "save_steps",
        "save_total_limit",
        "allow_download",
        "distributed",
        "ddp_timeout",
        "keep_steps",
    }
)


def fingerprint(config: TrainConfig) -> dict[str, Any]:
    """What decides a run's weights: its settings (paths resolved: `runs.settings`) and the content of its data. A
    folder trained with other ones is not resumed: its checkpoint would mix two runs."""
    inputs = {}
    for name in ("mixture", "data", "eval_data"):
        path = getattr(config, name)
        if path is not None:  # a mixture folder is named by its manifest
            inputs[name] = content(path / "manifest.json" if path.is_dir() else path)
    return {"settings": settings(config, exclude=UNLEARNED, sources=("model",)), "inputs": inputs}


def _train(
    config: TrainConfig,
    out: Path,
    record: dict[str, Any],
    *,
    resume: bool,
    progress: bool,
    validator: Callable[[list[Example]], Validator] | None,
) -> dict[str, Any]:
    import datasets
    from transformers import DataCollatorForSeq2Seq, DataCollatorWithFlattening, PrinterCallback

    # Raised inside transformers on every run in 5.x; nothing a user of shoptune can act on.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    if config.mixture is not None:
        config = config.model_copy(update={"mixture": mixture_folder(config, out)})
    train_examples, held_out = load_examples(config)
    if config.keep != "last" and not held_out:
        raise ShoptuneError(
            f"keep {config.keep}: there are no validation examples to choose the checkpoint on "
            "(give eval_data, or a mixture with validation_per_subtask above 0)"
        )
    checkpoint = last_checkpoint(out) if resume else None
    # Before the model: the arguments set up the distributed state, which places a 4-bit model on this process's
    # GPU, lets DeepSpeed ZeRO-3 build the model sharded and FSDP load it on the main process only.
    args = training_arguments(config, out, evaluate=bool(held_out), first=checkpoint is None, quiet=not progress)
    model, tokenizer = load_model(config, device=args.device)
    if config.gradient_checkpointing and config.method != "qlora":  # QLoRA's preparation has turned it on
        checkpoint_activations(model, selective=config.selective_checkpointing)
    trained = [name for name, p in model.named_parameters() if p.requires_grad]
    datasets.disable_progress_bars()
    train_set = datasets.Dataset.from_list([encode(ex, tokenizer, config) for ex in train_examples])
    eval_set = datasets.Dataset.from_list([encode(ex, tokenizer, config) for ex in held_out]) if held_out else None
    if config.packing:
        collator = DataCollatorWithFlattening(return_position_ids=True)
    else:
        collator = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)
    trainer = make_trainer(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=eval_set,
        data_collator=collator,
        processing_class=tokenizer,
    )
    trainer.label_smoothing = config.label_smoothing
    if config.shopbench_eval_examples and held_out:
        if trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled:
            raise ShoptuneError(
                "shopbench_eval_examples needs the whole model in every process, which FSDP and DeepSpeed shard; "
                "set it to 0 and score the saved checkpoints with `shoptune eval run` instead"
            )
        assert validator is not None
        # Every process answers the same questions with its whole copy (DDP), so no process waits on another.
        trainer.validator = validator(stratified(held_out, config.shopbench_eval_examples))
    distributed = how_it_ran(trainer.accelerator)
    made: dict[str, Any] = {}  # the main process records the run (the model's weights are hashed there only)
    if trainer.is_world_process_zero():
        previous = read_state(out / RUN_RECORD).get("provenance") if (out / RUN_RECORD).is_file() else None
        made = provenance(config.model, config.allow_download, previous)
        record = {**record, "distributed": distributed, "provenance": made}
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "config.yaml", dump_config(config))
        atomic_write_text(out / RUN_RECORD, json.dumps(record, indent=2) + "\n")
    if not progress:
        trainer.remove_callback(PrinterCallback)  # quiet means quiet: no per-step dicts on stdout
    if config.keep_steps:
        if config.method == "full" or trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled:
            raise ShoptuneError("keep_steps keeps LoRA adapters of a run on one process or under DDP")
        trainer.add_callback(keeper(set(config.keep_steps), out / STEPS))
    start_step = 0
    if checkpoint is not None and (Path(checkpoint) / LOSS_RECORD).is_file():
        summed = read_state(Path(checkpoint) / LOSS_RECORD)
        trainer.earlier_loss, start_step = float(summed["summed_loss"]), int(summed["step"])
    began = time.monotonic()
    try:
        result = trainer.train(resume_from_checkpoint=checkpoint)
    finally:  # an interrupted attempt's time counts too
        if made:
            made["wall_seconds"] = round(made["wall_seconds"] + time.monotonic() - began, 1)
            atomic_write_text(out / RUN_RECORD, json.dumps(record, indent=2) + "\n")
    session_steps = result.global_step - start_step
    train_loss = (trainer.earlier_loss + result.training_loss * session_steps) / max(result.global_step, 1)
    final_eval = final_eval_loss(trainer) if eval_set is not None else None
    model.config.use_cache = True  # saved models generate with a KV cache again
    save_complete(trainer, out / ADAPTER, full=config.method == "full", trained=trained)  # every process takes part
    summary: dict[str, Any] = {}
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(str(out / ADAPTER))
        if config.method != "full":  # its base as the user named it, for merge, serve and eval without --model
            write_json(out / ADAPTER / BASE_RECORD, {"model": portable_name(config.model)})
        summary = {
            "parameters": count_parameters(model),
            "lora_rank": config.lora.rank if config.method != "full" else None,
            "train_examples": len(train_examples),
            "eval_examples": len(held_out),
            "steps": result.global_step,
            "train_loss": train_loss,
            "initial_eval_loss": initial_eval_loss(trainer),
            "final_eval_loss": final_eval,
            "tokens_seen": trainer.state.num_input_tokens_seen,
            "kept_checkpoint": trainer.state.best_model_checkpoint,
            "shopbench_validation": shopbench_curve(trainer.state.log_history),
            "train_seconds": result.metrics.get("train_runtime"),
            "distributed": distributed,
            "provenance": made,
            "log_history": trainer.state.log_history,
        }
        atomic_write_text(out / SUMMARY, json.dumps(summary, indent=2, default=_jsonable) + "\n")
    leave()  # together, once the run is recorded finished
    return summary


def training_arguments(config: TrainConfig, out: Path, *, evaluate: bool, first: bool, quiet: bool) -> Any:
    """transformers' arguments for this run; in one process, never `nn.DataParallel` over several GPUs."""
    from transformers import TrainingArguments

    os.environ["TENSORBOARD_LOGGING_DIR"] = str(out / "logs")
    args = TrainingArguments(
        output_dir=str(out / "checkpoints"),
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_ratio,  # a float below 1 is a fraction of the run
        weight_decay=config.weight_decay,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        # Passed only when wanted: transformers 5 renames the option and warns on every explicit use.
        **({"gradient_checkpointing": True} if config.gradient_checkpointing and config.method == "qlora" else {}),
        bf16=use_bf16(config),
        seed=config.seed,
        data_seed=config.seed,
        eval_strategy="steps" if evaluate else "no",
        eval_steps=config.eval_steps,
        # The loss before training, evaluated inside train(): there the model is already wrapped (DeepSpeed refuses
        # an evaluation before it, ZeRO-2 outright, ZeRO-3 leaving a stale engine). Not again on resume.
        eval_on_start=evaluate and first,
        save_strategy="steps",
        **(
            {
                "load_best_model_at_end": True,
                "metric_for_best_model": "eval_loss" if config.keep == "loss" else "eval_shopbench_overall",
                "greater_is_better": config.keep == "shopbench",
            }
            if config.keep != "last" and evaluate
            else {}
        ),
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        logging_steps=config.logging_steps,
        report_to=config.report_to,
        disable_tqdm=quiet,
        remove_unused_columns=False,
        use_cpu=not _cuda(),  # also what makes torchrun / accelerate launch on CPUs run DDP over gloo
        ddp_backend="gloo" if not _cuda() and world_size() > 1 else None,
        ddp_find_unused_parameters=False,  # every trained weight takes part in every step
        ddp_timeout=config.ddp_timeout,
        dataloader_num_workers=0,
        include_num_input_tokens_seen="all",
        prediction_loss_only=True,
    )
    if args.n_gpu > 1:  # one process that sees several GPUs: keep to the first (the CLI relaunches instead)
        args._n_gpu = 1  # what transformers itself does for a model-parallel model
    return args


def save_complete(trainer: Any, folder: Path, *, full: bool, trained: list[str]) -> None:
    """The final adapter (or model), gathered whole from every process, then checked on the main one.

    Every process must enter the gathering (ZeRO-3 consolidation, FSDP's state dict). Trainer.save_model writes
    nothing under FSDP with sharded state dicts (what checkpoints use): there the full state dict is taken here."""
    if trainer.is_fsdp_enabled:
        state = gathered_state(trainer.model, trained_only=not full)
        if trainer.is_world_process_zero():
            trainer.accelerator.unwrap_model(trainer.model).save_pretrained(str(folder), state_dict=state)
    else:
        trainer.save_model(str(folder))
    agree(lambda: check_saved(folder, full=full, trained=trained))  # an incomplete save fails every process


def gathered_state(model: Any, *, trained_only: bool) -> dict[str, Any]:
    """The sharded model's state dict, whole, on the main process's CPU. For an adapter only the trained tensors are
    gathered (torch's `ignore_frozen_params`): gathering the frozen base too would put a 70B model in one process's
    memory to keep a few megabytes of LoRA weights."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=trained_only)
    return get_model_state_dict(model, options=options)


def check_saved(folder: Path, *, full: bool, trained: list[str]) -> None:
    """A run is marked finished only with complete weights: an adapter holds every trained tensor."""
    from safetensors import safe_open

    files = sorted(folder.glob("*.safetensors"))
    keys: set[str] = set()
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            keys.update(handle.keys())
    expected = 1 if full else len(trained)
    if len(keys) < expected:
        raise ShoptuneError(
            f"{folder}: the saved {'model' if full else 'adapter'} holds {len(keys)} tensors, expected "
            f"{'some' if full else expected}; the run is not marked finished (rerun to save again)"
        )


def shopbench_curve(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The validation ShopBench scores by step, as logged at each evaluation."""
    return [
        {"step": e["step"], **{k.removeprefix("eval_shopbench_"): v for k, v in e.items() if "shopbench" in k}}
        for e in history
        if "eval_shopbench_overall" in e
    ]


def initial_eval_loss(trainer: Any) -> float | None:
    """The validation loss before the first step; kept in the checkpoints' log, so a resumed run still has it."""
    logged = [e["eval_loss"] for e in trainer.state.log_history if "eval_loss" in e and e.get("step") == 0]
    return logged[0] if logged else None


def final_eval_loss(trainer: Any) -> float:
    """The validation loss after the last step: the one logged at that step if training ended on an evaluation
    step, else evaluated now (never twice)."""
    step = trainer.state.global_step
    logged = [e["eval_loss"] for e in trainer.state.log_history if "eval_loss" in e and e.get("step") == step]
    return logged[-1] if logged else trainer.evaluate()["eval_loss"]


def _jsonable(value: Any) -> Any:
    return None if isinstance(value, float) and math.isnan(value) else str(value)


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def last_checkpoint(out: Path) -> str | None:
    """The newest checkpoint written to the end. transformers writes trainer_state.json last, so a run killed while
    saving leaves a newer folder without a readable one, which its own resume would pick and fail on; it is passed
    over (and written again when training reaches that step)."""
    complete = []
    for folder in (out / "checkpoints").glob("checkpoint-*"):
        step = folder.name.removeprefix("checkpoint-")
        try:
            json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if step.isdigit():
            complete.append((int(step), folder))
    return str(max(complete)[1]) if complete else None


MERGED = "merged.json"  # what a merged model was made of, written last into it
MERGE = Layout("merge", frozenset({MERGED}), identity=MERGED, finished=MERGED, made="a merged model made")


def merge(base: str, adapter: Path, out: Path, allow_download: bool = False, alpha: float = 1.0) -> bool:
    """Fold a LoRA adapter into its base model, so it serves and quantises like any plain model. With `alpha`,
    the weights are interpolated between the base (0) and the tuned model (1), as in wise-ft: W = W_base +
    alpha (W_tuned - W_base), exact for LoRA, whose tuned weights differ from the base by its scaled product.
    The model is written under a temporary name and renamed, into a folder that must not exist yet (or be
    empty); the same merge rerun finds it finished (returns True) and writes nothing."""
    if not 0.0 <= alpha <= 1.0:  # NaN fails both comparisons
        raise ShoptuneError(f"--alpha {alpha}: expected a number from 0 (the base model) to 1 (the tuned one)")
    require_adapter(adapter)
    identity = {"base": source(base), "adapter": folder_content(adapter), "alpha": alpha}
    with RunFolder.open(out, MERGE, identity) as folder:
        if folder.was_finished:
            return True
        model, tokenizer = load_causal_lm(base, allow_download)
        tuned = with_adapter(model, adapter, base)
        if alpha != 1.0:
            interpolate(tuned, alpha)
        merged = tuned.merge_and_unload()
        with folder_in_place(out) as tmp:  # replaces at most an empty folder: checked by RunFolder.open
            merged.save_pretrained(str(tmp))
            tokenizer.save_pretrained(str(tmp))
            RunFolder(tmp, MERGE).write_record(identity)
    return False
