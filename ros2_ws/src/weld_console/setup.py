from glob import glob

from setuptools import find_packages, setup

package_name = 'weld_console'

setup(
    name=package_name,
    version='0.1.0',
    packages=find_packages(exclude=['test']),
    # the page (HTML, plain JavaScript modules, CSS) ships inside the Python package: no CDN, no build
    package_data={package_name: ['web/*.html', 'web/*.js', 'web/*.css']},
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml']),
        ('share/' + package_name + '/config', glob('config/*.yaml')),
    ],
    install_requires=['setuptools', 'numpy', 'aiohttp', 'PyYAML'],
    zip_safe=False,
    maintainer='weldvision developers',
    maintainer_email='dev@weldvision.org',
    description='Operator console: live view, labelling, review queue and models panel in a browser.',
    license='Apache-2.0',
    entry_points={
        'console_scripts': [
            'console_node = weld_console.console_node:main',
        ],
    },
)
