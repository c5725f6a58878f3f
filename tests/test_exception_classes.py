"""One exception class per concept (issue 23 §4): Interrupted and NonFiniteError live in lmmap.exceptions only."""

import lmmap.exceptions as exceptions


def test_interrupted_is_one_class_importable_where_it_was():
    import lmmap.cli._app as app
    import lmmap.data.store as store

    assert store.Interrupted is app.Interrupted is exceptions.Interrupted
    assert issubclass(exceptions.Interrupted, KeyboardInterrupt) and not issubclass(exceptions.Interrupted, Exception)
    exc = exceptions.Interrupted("3 of 5 models kept; rerun to resume")
    assert str(exc) == exc.message == "3 of 5 models kept; rerun to resume"


def test_non_finite_error_is_one_class_with_the_text_position():
    import lmmap.scoring as scoring
    import lmmap.scoring.protocol as protocol

    assert protocol.NonFiniteError is scoring.NonFiniteError is exceptions.NonFiniteError
    exc = exceptions.NonFiniteError("non-finite log-likelihood (nan) for the text at position 7", 7)
    assert isinstance(exc, exceptions.ScoringError) and exc.position == 7 and exc.params == ()
    assert exceptions.NonFiniteError("no position").position is None


def test_ctrl_c_inside_a_command_is_one_line_saying_what_was_kept(monkeypatch):
    """Carried past typer as click's Abort: main reads the interruption from its cause, and prints nothing else."""
    import lmmap.cli.store_cmds  # noqa: F401  (registers the commands)
    from cli_main import run_main
    import lmmap.data.store as store

    def interrupted(*a, **k):
        raise exceptions.Interrupted("2 checkpoint chunk(s) kept; rerun the same command to resume")

    monkeypatch.setattr(store, "Store", interrupted)
    code, out, err = run_main("models", "--store", "nowhere")
    assert code == 130 and out == ""
    assert err == "interrupted: 2 checkpoint chunk(s) kept; rerun the same command to resume\n", err
