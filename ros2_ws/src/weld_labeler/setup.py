from glob import glob

from setuptools import find_packages, setup

package_name = 'weld_labeler'

setup(
    name=package_name,
    version='0.1.0',
    packages=find_packages(exclude=['test']),
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml']),
        ('share/' + package_name + '/config', glob('config/*.yaml')),
    ],
    install_requires=['setuptools', 'numpy', 'rosbags', 'PyYAML'],
    zip_safe=True,
    maintainer='weldvision developers',
    maintainer_email='dev@weldvision.org',
    description='Labels RGB-D weld captures by ROS service and records them as rosbag2 sessions.',
    license='Apache-2.0',
    entry_points={
        'console_scripts': [
            'labeler_node = weld_labeler.labeler_node:main',
            'weld-label = weld_labeler.cli:main',
        ],
    },
)
