"""``generate`` and ``eval`` have an image and a video mode, each a parser of its own options."""

import pytest

from ditkit.assets import default_model_dir, default_video_model_dir
from ditkit.cli import build_parser, main
from ditkit.cli.evaluate import cmd_eval, cmd_eval_video
from ditkit.cli.generate import cmd_generate, cmd_generate_video


def parse(*argv):
    return build_parser().parse_args(list(argv))


def test_generate_mode_is_chosen_by_the_video_flag():
    assert parse("generate").func is cmd_generate
    args = parse("generate", "--video", "--frames", "16", "--prompt", "a small red circle moving left")
    assert args.func is cmd_generate_video and args.frames == 16 and args.out == "samples.gif"
    assert parse("generate", "--prompt", "x", "--video").func is cmd_generate_video  # anywhere among the options
    assert parse("generate").out == "samples.png"


def test_eval_mode_is_chosen_by_the_model_folder_or_the_video_flag():
    assert parse("eval").func is cmd_eval
    assert parse("eval", "--model", str(default_model_dir())).func is cmd_eval
    args = parse("eval", "--model", str(default_video_model_dir()), "--long-clips", "2", "--no-i2v")
    assert args.func is cmd_eval_video and args.long_clips == 2 and args.no_i2v
    assert parse("eval", "--video").func is cmd_eval_video
    assert parse("eval", "--model", "no/such/folder").func is cmd_eval  # the image loader says what is missing


@pytest.mark.parametrize("argv,line", [
    (["generate", "--frames", "8"], "ditkit generate: error: --frames is a video option: add --video"),
    (["generate", "--image", "x.png"], "ditkit generate: error: --image is a video option: add --video"),
    (["generate", "--fps", "4"], "ditkit generate: error: --fps is a video option: add --video"),
    (["generate", "--video", "--vae", "v"], "ditkit generate: error: --vae is not supported with --video"),
    (["generate", "--video", "--classes", "circle"], "ditkit generate: error: --classes is not supported with --video"),
    (["generate", "--video", "--guidance-interval", "0,500"],
     "ditkit generate: error: --guidance-interval is not supported with --video"),
    (["eval", "--long-clips", "2"], "ditkit eval: error: --long-clips is a video option: they apply to video models"),
    (["eval", "--video", "--grid", "g.png"], "ditkit eval: error: --grid is an image-model option: not used on video models"),
])
def test_an_option_of_the_other_mode_is_one_line(capsys, argv, line):
    assert main(argv) == 2
    assert capsys.readouterr().err.strip().splitlines() == [line]


def test_unknown_options_and_bad_values_stay_argparse_errors(capsys):
    for argv in (["generate", "--no-such-flag"], ["generate", "--video", "--sampler", "heun"],
                 ["eval", "--video", "--ar-step", "-1"]):
        assert main(argv) == 2  # one line each, no usage block
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 3
    assert "unrecognized arguments: --no-such-flag" in err and "invalid choice: 'heun'" in err
    assert "expected an integer >= 0" in err and "Traceback" not in err


def test_help_of_each_mode_lists_its_own_options(capsys):
    for argv, has, lacks in ((["generate"], ["--classes", "--vae", "--video"], ["--frames", "--ar-step"]),
                             (["generate", "--video"], ["--frames", "--ar-step", "--fps"], ["--classes", "--vae"]),
                             (["eval"], ["--grid", "--reference-samples", "--video"], ["--long-clips"]),
                             (["eval", "--video"], ["--long-clips", "--no-i2v", "--ar-step"], ["--grid"])):
        with pytest.raises(SystemExit) as exc:
            main([*argv, "--help"])
        assert exc.value.code == 0
        text = capsys.readouterr().out
        assert all(f in text for f in has), (argv, has)
        assert not any(f + " " in text for f in lacks), (argv, lacks)


def test_video_parsers_hang_off_the_image_parsers():
    """The CLI reference renders both modes: ``generate`` and ``eval`` hold their video parser as ``.video``."""
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for name in ("generate", "eval"):
        video = sub.choices[name].video
        assert video is not None and video.prog == f"ditkit {name} --video"
    assert sub.choices["train"].video is None
