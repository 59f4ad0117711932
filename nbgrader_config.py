# nbgrader settings of this series: copy this file next to your course's source/ folder (or run nbgrader
# from the repository root). The grading kernel needs the `helpers` package installed (pip install -e .).
from helpers.course import AFTER_TIMEOUT_S, CELL_LIMIT_S, autograde_preprocessors

c = get_config()  # noqa: F821 - nbgrader provides get_config
# Under nbgrader (NBGRADER_EXECUTION set) the notebooks run in quick mode, without progress bars (which
# write to stderr, and a check cell that writes to stderr scores 0), and keep results in a temporary folder.
c.Execute.timeout = CELL_LIMIT_S  # seconds per cell, in quick mode; nbgrader's default is 30
c.GradingExecute.timeout = CELL_LIMIT_S
# After a cell has timed out, cells that are not check cells get AFTER_TIMEOUT_S seconds, so a function
# that never returns cannot stall every later cell that calls it.
c.GradingExecute.after_timeout = AFTER_TIMEOUT_S
c.Autograde.autograde_preprocessors = autograde_preprocessors()
