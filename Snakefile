# vitedge: data -> pretrain -> finetune -> distill -> export -> quantise -> validate -> report
#   snakemake --cores 8 all                                          # embedded synthetic default
#   snakemake --cores 8 all --configfile workflow/config/fer2013.yaml  # real FER-2013
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "workflow/config.yaml"


# checks every key (a typo stops the run here) and fills in the schema's defaults, nested ones too:
# the rules read the config plainly
validate(config, "workflow/schemas/config.schema.yaml")


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
