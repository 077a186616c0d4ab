# A workaround in the SLURM executor plugin, active only where Snakemake runs it (--executor slurm).
#
# snakemake-executor-plugin-slurm (2.6.1, vitedge[slurm]'s, and 2.8.0, the newest) compares sacct's job
# state with its list of failures as a whole string, but sacct writes a cancelled job's state as
# "CANCELLED by <uid>": a job cancelled with `scancel` (by its user, an admin, or a site's preemption
# policy) is taken for one still running, and Snakemake waits for it for ever instead of retrying it
# (`retries` in the profile; training then resumes from its checkpoint). Seen on the local cluster
# (tests/test_slurm.py, plugin 2.8.0): no retry in the minutes after the cancel, until Snakemake was
# stopped. This keeps the state's first word.
import sys as _sys

_slurm_plugin = _sys.modules.get("snakemake_executor_plugin_slurm")
if _slurm_plugin is not None and not getattr(getattr(_slurm_plugin, "query_job_status", None), "vitedge", False):
    _query_job_status = _slurm_plugin.query_job_status

    async def _first_word_of_states(*args, _query=_query_job_status, **kwargs):
        states, seconds = await _query(*args, **kwargs)
        if states:
            states = {job: state.split()[0] if state.strip() else state for job, state in states.items()}
        return states, seconds

    _first_word_of_states.vitedge = True
    _slurm_plugin.query_job_status = _first_word_of_states
