# vitedge: data -> pretrain -> finetune -> distill -> export -> quantise -> validate -> report
#   snakemake --cores 8 all                                          # embedded synthetic default
#   snakemake --cores 8 all --configfile workflow/config/fer2013.yaml  # real FER-2013
import os
import sys
import tempfile

from snakemake.utils import min_version, validate

min_version("9.0")
sys.path.insert(0, workflow.basedir)  # vitedge from this checkout
from vitedge.plan import write_config_schema


configfile: "workflow/config.yaml"


# checks every key (a typo stops the run here) and fills in the schema's defaults, nested ones too:
# the rules read the config plainly. The schema's format and precision words are put in from
# vitedge.artefact.FORMAT_TABLE (vitedge.plan.config_schema); validate() reads a file, hence the scratch one
with tempfile.TemporaryDirectory() as scratch:
    validate(config, str(write_config_schema(os.path.join(workflow.basedir, "workflow/schemas/config.schema.yaml"),
                                             scratch)))


include: "workflow/rules/common.smk"
include: "workflow/rules/plan.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/compress.smk"
include: "workflow/rules/export.smk"
include: "workflow/rules/validate.smk"
include: "workflow/rules/slurm_compat.smk"  # a fix for the SLURM executor plugin, where it runs


rule all:
    input:
        ALL_TARGETS,
    default_target: True
