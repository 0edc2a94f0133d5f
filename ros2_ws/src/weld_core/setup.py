from setuptools import find_packages, setup

package_name = 'weld_core'

setup(
    name=package_name,
    version='0.1.0',
    packages=find_packages(exclude=['test']),
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml']),
    ],
    install_requires=['setuptools', 'numpy'],
    zip_safe=True,
    maintainer='weldvision developers',
    maintainer_email='dev@weldvision.org',
    description='ROS-free core shared by the weldvision nodes and training.',
    license='Apache-2.0',
)
