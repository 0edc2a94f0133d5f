"""Bring up the weldvision graph on a ROS 2 install.

    ros2 launch weld_bringup scan.launch.py [source:=sim] [models_dir:=...] [recording_dir:=...]
                                            [params_file:=...]
                                            [nodes:=camera,labeler,inference]

The nodes, their names, site configs and which argument overrides which parameter come from
weld_bringup.graph, the same declaration the pip-world runner (weld-scan) reads.
"""

from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

from launch import LaunchContext, LaunchDescription
from weld_bringup import graph


def _nodes(context: LaunchContext) -> list[Node]:
    arguments = {arg.name: LaunchConfiguration(arg.name).perform(context) for arg in graph.LAUNCH_ARGS}
    return [
        Node(
            package=planned.spec.package,
            executable=planned.spec.executable,
            name=planned.spec.name,
            # launch arguments are text: keep '0042' or 'true' as the string the parameter expects
            parameters=[
                *(str(path) for path in planned.params_files),
                {name: ParameterValue(value, value_type=str) for name, value in planned.overrides.items()},
            ],
            output='screen',
        )
        for planned in graph.resolve(arguments, graph.config_dir())
    ]


def generate_launch_description() -> LaunchDescription:
    declared = [
        DeclareLaunchArgument(arg.name, default_value=arg.default, description=arg.description)
        for arg in graph.LAUNCH_ARGS
    ]
    return LaunchDescription([*declared, OpaqueFunction(function=_nodes)])
