"""The exit statuses of every ``mpicolor`` command, named: ``run`` and the tools (``pack``, ``inspect``,
``render``, ``export``) give the same number for the same kind of outcome, so that a job script reads them alike
(`mpicolor.cli`'s epilog and docs/running.md say what each means to a user)."""

EXIT_OK = 0
# an input could not be read, at all or in part: a tarball (run, inspect, render, export) or a video (pack); it
# is named in the log, and the others are done
EXIT_INPUT_FAILED = 1
# a bad setting: a bad flag value, a missing INPUT_DIR, an unknown --tarball, a bad --out or --width
EXIT_USAGE = 2
# OUTPUT_DIR cannot be used (locked by another run, not writable, full, results of other settings), or holds no
# results to read (the tools)
EXIT_OUTPUT = 3
# run: interrupted by SIGUSR1, SIGTERM or SIGINT after a final checkpoint
EXIT_INTERRUPTED = 4
# run: a rank stopped answering and was given up on; the others computed its frames
EXIT_RANK_LOST = 5
# run: a rank raised an exception and the job was aborted (sysexits.h EX_SOFTWARE: an internal software error)
EXIT_RANK_FAILED = 70
