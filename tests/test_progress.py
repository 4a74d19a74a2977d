from wsrl_wm.progress import LogLines, progress_bar


def test_log_lines_print_one_line_every_five_percent(capsys):
    bar = LogLines(total=1000, desc="collect")
    bar.set_postfix(score="12.5")
    for _ in range(1000):
        bar.update(1)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 21 and "\r" not in "".join(lines)
    assert lines[0] == "collect: 0/1000 started"  # the log shows the loop began at once
    assert lines[1].startswith("collect: 50/1000 (5%) score=12.5 [")
    assert lines[-1].startswith("collect: 1000/1000 (100%)")


def test_log_lines_resume_from_an_initial_count(capsys):
    bar = LogLines(total=100, desc="train", initial=42)
    bar.update(3)
    assert capsys.readouterr().err.splitlines()[1].startswith("train: 45/100 (45%)")


def test_a_log_gets_lines_not_redraw_frames():
    # pytest captures stderr: not a terminal, as in a study's run.log
    assert isinstance(progress_bar(10, "x"), LogLines)
