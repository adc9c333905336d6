"""A foundation model as the MVKT teacher: ECGFounder's 12-lead Net1D, fine-tuned on the target
dataset, distilled into a single-lead student.

Weights: ECGFounder (Li et al., NEJM AI 2025; code PKUDigitalHealth/ECGFounder, MIT licence) on
the Hugging Face hub, https://huggingface.co/PKUDigitalHealth/ECGFounder: `12_lead_ECGFounder.pth`
(the teacher) and `1_lead_ECGFounder.pth` (an optional student start), 150 classes each:

  huggingface-cli download PKUDigitalHealth/ECGFounder --local-dir checkpoint

1. Convert the 12-lead checkpoint into a teacher run directory with a new head for the target
   classes and ECGFounder's input contract (500 Hz, 10 s, its filter and per-record z-score):

  python -m lead_kt.convert --from-torch checkpoint/12_lead_ECGFounder.pth --backbone net1d \
    --class-names CD,HYP,MI,NORM,STTC --sampling-rate 500 --preprocessing ecgfounder \
    --head-seed 0 --dataset ptbxl/superdiagnostic_500hz --out runs/ecgfounder12

2. Fine-tune it into the teacher (WORKDIR/teacher, teacher.num_epochs epochs from its weights; the
   run takes the contract from the converted run), then train the student with MVKT:

  python -m lead_kt.main --config=configs/foundation_mvkt.py --workdir=runs/foundation_mvkt \
    --config.teacher.init_from=runs/ecgfounder12

Variants: `configs/foundation_mvkt.py:probe` trains only the teacher's new head (a linear probe of
ECGFounder's features); `:founder_student` makes the student the single-lead ECGFounder, started
from its checkpoint converted with `--num-leads 1 --leads I --out runs/ecgfounder1` (other flags
as above) and given as `--config.student.init_from=runs/ecgfounder1`.

Costs: the 12-lead Net1D has 30.7M parameters (123 MB in float32). On 2 shared CPU cores (load
about 4) one MVKT step with it as the frozen teacher of fcn_wang, batch 8, 10 s at 500 Hz, took
1.5 s (82 GFLOP, 155 MB of arguments and 221 MB of temporaries; `lead_kt.bench` case
`mvkt:fcn_wang:8:5000:1:float32:net1d`); with both networks in bfloat16, 2.1 s and 385 MB (CPUs
have no fast bfloat16; accelerators do). Fine-tuning the teacher costs a multiple of that per
step and wants an accelerator. `--config.teacher.dtype=bfloat16` runs the teacher (its fine-tuning
and its frozen forward in the MVKT step) in bfloat16, parameters float32.
The learning rates are a small fine-tuning rate and the default student's; none was tuned here.
"""

from configs import mvkt

VARIANTS = ("", "probe", "founder_student")


def get_config(variant: str = ""):
  if variant not in VARIANTS:
    raise ValueError(f"unknown variant {variant!r}; known: {', '.join(map(repr, VARIANTS))}")
  c = mvkt.get_config()
  # ECGFounder's contract: records at 500 Hz, 10 s windows, its filter and per-record z-score.
  c.data.name = "ptbxl/superdiagnostic_500hz"
  c.data.preprocessing = "ecgfounder"
  c.data.normalization = "none"
  c.data.crop_len = 5000
  c.batch_size = 32
  c.num_epochs = 30

  c.teacher.backbone = "net1d"
  c.teacher.init_from = ""  # the converted 12-lead run directory (step 1), on the command line
  c.teacher.num_epochs = 10
  c.teacher.optimizer.learning_rate = 1e-4  # pretrained weights: a small step
  if variant == "probe":
    c.teacher.freeze_backbone = True
    c.teacher.optimizer.learning_rate = 1e-3
  if variant == "founder_student":
    c.student.backbone = "net1d"
    c.student.init_from = ""  # the converted 1-lead run directory, on the command line
    c.optimizer.learning_rate = 1e-4
  return c
