from glob import glob

from setuptools import find_packages, setup

package_name = 'weld_bringup'

setup(
    name=package_name,
    version='0.1.0',
    packages=find_packages(exclude=['test']),
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml']),
        ('share/' + package_name + '/launch', glob('launch/*.launch.py')),
        ('share/' + package_name + '/config', glob('config/*.yaml')),
    ],
    install_requires=['setuptools', 'PyYAML'],
    zip_safe=True,
    maintainer='weldvision developers',
    maintainer_email='dev@weldvision.org',
    description='Launch file, pip-world runner, site configs and the demo loop of weldvision.',
    license='Apache-2.0',
    entry_points={
        'console_scripts': [
            'weld-scan = weld_bringup.runner:main',
            'weld-demo = weld_bringup.demo:main',
        ],
    },
)
